"""Importance-sampled log-likelihood, IWAE loss, bits/dim and NVAE's residual KL (models.md §10.6, §11)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from trainwell.explain import bits_per_dim, iw_log_likelihood, iwae_loss, residual_normal_kl

D64 = torch.float64


class LinearGaussian:
    """z ~ N(0, I_2), x | z ~ N(Wz + b, 0.3 I_4): log p(x) = log N(x; b, WWᵀ + 0.3 I) in closed form."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(4, 2, generator=g, dtype=D64)
        self.b = torch.randn(4, generator=g, dtype=D64)
        self.var = 0.3

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.var * torch.eye(4, dtype=D64)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return Normal(z @ self.W.T + self.b, math.sqrt(self.var)).log_prob(x).sum(-1)

    @staticmethod
    def prior_log_prob(z: torch.Tensor) -> torch.Tensor:
        return Normal(torch.zeros((), dtype=D64), 1.0).log_prob(z).sum(-1)

    def posterior(self, x: torch.Tensor, shift: float = 0.0, cov_scale: float = 1.0) -> MultivariateNormal:
        prec = torch.eye(2, dtype=D64) + self.W.T @ self.W / self.var
        cov = torch.linalg.inv(prec)
        mu = (x - self.b) @ self.W @ cov.T / self.var
        return MultivariateNormal(mu + shift, covariance_matrix=cov_scale * cov)


def test_exact_posterior_gives_exact_log_likelihood_for_every_k() -> None:
    m = LinearGaussian()
    x = torch.randn(5, 4, dtype=D64)
    exact = m.log_px(x)
    for k in (1, 10, 100, 1000):
        reps = torch.stack([iw_log_likelihood(m.posterior, m.decoder_log_prob, m.prior_log_prob, x, k, 300)
                            for _ in range(3)])
        assert (reps - exact).abs().max() < 1e-10
        assert reps.std(0).max() < 1e-10


def test_gap_shrinks_with_k_for_a_mismatched_encoder() -> None:
    torch.manual_seed(0)
    m = LinearGaussian()
    x0 = torch.randn(1, 4, dtype=D64)
    x = x0.expand(200, 4)  # 200 independent repetitions as one batch

    def enc(t: torch.Tensor) -> MultivariateNormal:
        return m.posterior(t, shift=0.5, cov_scale=2.0)

    exact = float(m.log_px(x0))
    gaps = {k: exact - float(iw_log_likelihood(enc, m.decoder_log_prob, m.prior_log_prob, x, k, 250).mean())
            for k in (1, 10, 100, 1000)}
    assert gaps[1] > gaps[10] > gaps[100] > 0
    assert abs(gaps[1000]) < 0.05


def test_log_weights_far_below_minus_1000_stay_finite() -> None:
    def enc(t: torch.Tensor) -> Independent:
        return Independent(Normal(torch.zeros(t.shape[0], 3), torch.ones(t.shape[0], 3)), 1)

    def dec(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -5000.0 + 0.0 * z.sum(-1)

    prior = lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1)  # noqa: E731
    x = torch.zeros(4, 2)
    est = iw_log_likelihood(enc, dec, prior, x, 1000, 128)
    assert torch.isfinite(est).all()
    assert torch.allclose(est, torch.full((4,), -5000.0), atol=1e-3)  # encoder == prior: weights = p(x|z)
    loss = iwae_loss(enc, dec, prior, x, 50)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(5000.0, abs=1e-2)


def test_iwae_loss_k1_is_negative_elbo_sample_and_differentiable() -> None:
    m = LinearGaussian(1)
    x = torch.randn(6, 4, dtype=D64)
    shift = torch.zeros(2, dtype=D64, requires_grad=True)

    def enc(t: torch.Tensor) -> MultivariateNormal:
        p = m.posterior(t)
        return MultivariateNormal(p.loc + shift, scale_tril=p.scale_tril)

    torch.manual_seed(3)
    loss = iwae_loss(enc, m.decoder_log_prob, m.prior_log_prob, x, num_samples=1, reduction="none")
    torch.manual_seed(3)
    q = enc(x)
    z = q.rsample((1,))[0]
    ref = -(m.decoder_log_prob(x, z) + m.prior_log_prob(z) - q.log_prob(z))
    assert torch.allclose(loss, ref, atol=1e-12)
    # with the true posterior every weight is p(x): the loss is -log p(x) exactly for any K
    exact = iwae_loss(m.posterior, m.decoder_log_prob, m.prior_log_prob, x, num_samples=7, reduction="sum")
    assert float(exact) == pytest.approx(float(-m.log_px(x).sum()), abs=1e-9)
    iwae_loss(enc, m.decoder_log_prob, m.prior_log_prob, x, num_samples=5).backward()
    assert shift.grad is not None and torch.isfinite(shift.grad).all()


def test_factorised_normal_encoder_and_shapes() -> None:
    m = LinearGaussian(2)
    x = torch.randn(3, 4, dtype=D64)

    def enc(t: torch.Tensor) -> Normal:  # batch shape [B, 2]: trailing dims of log_prob are summed
        p = m.posterior(t)
        return Normal(p.loc, p.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())

    est = iw_log_likelihood(enc, m.decoder_log_prob, m.prior_log_prob, x, 2000, 500)
    assert est.shape == (3,) and est.dtype == D64
    assert (est - m.log_px(x)).abs().max() < 0.1  # a close (diagonal) proposal and many samples


def test_bits_per_dim_golden() -> None:
    lp = torch.tensor([-784 * math.log(2.0), -2 * 784 * math.log(2.0)])
    assert torch.allclose(bits_per_dim(lp, 784), torch.tensor([1.0, 2.0]))
    assert torch.allclose(bits_per_dim(lp, 784, num_levels=256), torch.tensor([9.0, 10.0]))


def test_residual_kl_equals_generic_gaussian_kl() -> None:
    g = torch.Generator().manual_seed(0)
    mu, ls = torch.randn(50, generator=g, dtype=D64), torch.randn(50, generator=g, dtype=D64)
    dmu, dls = torch.randn(50, generator=g, dtype=D64), torch.randn(50, generator=g, dtype=D64) * 0.5
    got = residual_normal_kl(dmu, dls, ls)
    ref = kl_divergence(Normal(mu + dmu, (ls + dls).exp()), Normal(mu, ls.exp()))
    assert (got - ref).abs().max() < 1e-10
    zero = residual_normal_kl(torch.zeros(4, dtype=D64), torch.zeros(4, dtype=D64), torch.randn(4, dtype=D64))
    assert torch.equal(zero, torch.zeros(4, dtype=D64))
    tiny = residual_normal_kl(
        torch.zeros(1, dtype=D64), torch.full((1,), 1e-9, dtype=D64), torch.zeros(1, dtype=D64)
    )
    assert float(tiny) == pytest.approx(1e-18, rel=1e-6)  # ½(e^{2t} − 1 − 2t) ≈ t² without cancellation
    assert torch.autograd.gradcheck(
        residual_normal_kl,
        (dmu[:5].clone().requires_grad_(), dls[:5].clone().requires_grad_(), ls[:5].clone().requires_grad_()),
    )
    half = residual_normal_kl(dmu.bfloat16(), dls.bfloat16(), ls.bfloat16())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_errors() -> None:
    m = LinearGaussian()
    x = torch.randn(2, 4, dtype=D64)
    with pytest.raises(ValueError, match=r"iw_log_likelihood\(\): argument 'num_samples' must be >= 1"):
        iw_log_likelihood(m.posterior, m.decoder_log_prob, m.prior_log_prob, x, 0)
    with pytest.raises(
        TypeError, match=r"argument 'encoder' must be a callable returning a torch.distributions"
    ):
        iw_log_likelihood(lambda t: t, m.decoder_log_prob, m.prior_log_prob, x, 5)
    with pytest.raises(ValueError, match=r"argument 'decoder_log_prob' must be a callable returning one"):
        iw_log_likelihood(m.posterior, lambda a, z: z.sum(), m.prior_log_prob, x, 5)
    with pytest.raises(ValueError, match=r"iwae_loss\(\): argument 'reduction' must be one of"):
        iwae_loss(m.posterior, m.decoder_log_prob, m.prior_log_prob, x, 5, reduction="avg")
    with pytest.raises(ValueError, match=r"bits_per_dim\(\): argument 'num_dims' must be >= 1"):
        bits_per_dim(torch.zeros(2), 0)
    with pytest.raises(ValueError, match=r"residual_normal_kl\(\): arguments .* must broadcast"):
        residual_normal_kl(torch.zeros(3), torch.zeros(4), torch.zeros(3))
