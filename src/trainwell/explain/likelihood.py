"""Density estimation with latent-variable models: importance-sampled log p(x), IWAE, bits/dim, NVAE's KL.

For a model ``p(x) = ∫ p(x|z) p(z) dz`` and an encoder ``q(z|x)`` used as the importance distribution
(post 8791 writes the generative side as ``q`` and the encoder as ``p``; the code follows the usual
VAE letters)::

    log p̂_K(x) = logsumexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)] − log K,   z_k ~ q(z|x)

``E[log p̂_K(x)] ≤ log p(x)``, it does not decrease with K and tends to ``log p(x)``; it is exact for
every K when ``q(z|x)`` is the true posterior. Training on ``−log p̂_K`` with reparameterised samples
is the VAE loss at K = 1 and the IWAE loss for K > 1.

Home: these tools live in :mod:`trainwell.explain.likelihood` and are re-exported by
:mod:`trainwell.explain` (model evaluation sits with attribution; ``trainwell.nn`` holds layers).

Sources: kexue.fm/archives/8791 (VAE part 8); Burda, Grosse, Salakhutdinov, "Importance Weighted
Autoencoders", arXiv:1509.00519; NVAE's residual KL: kexue.fm/archives/7574, arXiv:2007.03898.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from trainwell._ops import apply_reduction
from trainwell._validation import check_callable, check_int, check_reduction, check_tensor, fail

__all__ = ["bits_per_dim", "iw_log_likelihood", "iwae_loss", "residual_normal_kl"]

EncoderFn = Callable[[Tensor], Any]
LogProbFn = Callable[..., Tensor]


def _encode(encoder: EncoderFn, x: Tensor, *, fn: str) -> Any:
    dist = encoder(x)
    if not (hasattr(dist, "log_prob") and (hasattr(dist, "rsample") or hasattr(dist, "sample"))):
        fail(fn, "encoder", "a callable returning a torch.distributions object (rsample/sample and log_prob)",
             dist, exc=TypeError)
    return dist


def _per_row(lp: Any, rows: int, what: str, *, fn: str) -> Tensor:
    """Reduce a log-density to one value per row (summing trailing dims, e.g. a factorised Normal)."""
    if not isinstance(lp, Tensor) or not lp.is_floating_point():
        fail(fn, what, "a callable returning a floating tensor of log-densities", lp, exc=TypeError)
    if lp.dim() == 0 or lp.shape[0] != rows:
        fail(fn, what, f"a callable returning one log-density per row ({rows} rows)", lp)
    return lp.reshape(rows, -1).sum(1)


def _log_weights(
    dist: Any,
    decoder_log_prob: LogProbFn,
    prior_log_prob: LogProbFn,
    x: Tensor,
    k: int,
    *,
    reparam: bool,
    fn: str,
) -> Tensor:
    """``[k, B]`` log importance weights ``log p(x|z) + log p(z) − log q(z|x)`` for ``k`` draws per
    example."""
    b = x.shape[0]
    z = dist.rsample((k,)) if reparam else dist.sample((k,))
    if not isinstance(z, Tensor) or z.dim() < 2 or z.shape[:2] != (k, b):
        fail(fn, "encoder", f"a distribution with batch shape [{b}] (samples [K, B, ...])", z)
    log_q = dist.log_prob(z)
    log_q = log_q.reshape(k, b, -1).sum(-1)
    zf = z.reshape(k * b, *z.shape[2:])
    xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
    log_px_z = _per_row(decoder_log_prob(xr, zf), k * b, "decoder_log_prob", fn=fn).view(k, b)
    log_pz = _per_row(prior_log_prob(zf), k * b, "prior_log_prob", fn=fn).view(k, b)
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    return log_px_z.to(dt) + log_pz.to(dt) - log_q.to(dt)


def _check_common(encoder: Any, decoder_log_prob: Any, prior_log_prob: Any, x: Any, *, fn: str) -> None:
    check_callable("encoder", encoder, fn=fn)
    check_callable("decoder_log_prob", decoder_log_prob, fn=fn)
    check_callable("prior_log_prob", prior_log_prob, fn=fn)
    check_tensor("x", x, fn=fn, min_ndim=1)
    if x.shape[0] < 1:
        fail(fn, "x", "a batch with at least one example", x)


@torch.no_grad()
def iw_log_likelihood(
    encoder: EncoderFn,
    decoder_log_prob: LogProbFn,
    prior_log_prob: LogProbFn,
    x: Tensor,
    num_samples: int = 5000,
    chunk_size: int = 500,
) -> Tensor:
    r"""Importance-sampled estimate of ``log p(x)`` per example (evaluation; no gradients).

    .. math::
        \log\hat p_K(x)=\operatorname{logsumexp}_{k=1}^{K}\big(\log p(x|z_k)+\log p(z_k)-\log
        q(z_k|x)\big)-\log K

    The ``K`` samples are drawn in chunks of ``chunk_size`` and combined by a running log-sum-exp, so
    memory is that of one chunk and log-weights far below −1000 stay finite.

    Args:
        encoder: ``encoder(x)`` returns a ``torch.distributions`` object over ``z`` with batch shape ``[B]``
            (e.g. ``Independent(Normal(mu, sigma), 1)``; a factorised ``Normal(mu, sigma)`` of batch shape
            ``[B, D_z]`` also works: trailing dims of ``log_prob`` are summed).
        decoder_log_prob: ``decoder_log_prob(x_rows, z_rows)`` → ``log p(x|z)`` per row; it receives
            ``K·B`` rows (``x`` repeated) and may return ``[K·B]`` or ``[K·B, ...]`` (summed).
        prior_log_prob: ``prior_log_prob(z_rows)`` → ``log p(z)`` per row (same convention).
        x: data ``[B, ...]``.
        num_samples: ``K`` (default 5000, the IWAE paper's evaluation setting).
        chunk_size: samples per chunk (default 500).

    Returns:
        ``[B]`` estimates in float32 (float64 for float64 ``x``).

    Source: kexue.fm/archives/8791; arXiv:1509.00519.
    """
    fn = "iw_log_likelihood"
    _check_common(encoder, decoder_log_prob, prior_log_prob, x, fn=fn)
    k_total = check_int("num_samples", num_samples, fn=fn, min=1)
    chunk = check_int("chunk_size", chunk_size, fn=fn, min=1)
    assert k_total is not None and chunk is not None
    dist = _encode(encoder, x, fn=fn)
    running: Tensor | None = None
    done = 0
    while done < k_total:
        k = min(chunk, k_total - done)
        lse = torch.logsumexp(
            _log_weights(dist, decoder_log_prob, prior_log_prob, x, k, reparam=False, fn=fn), 0
        )
        running = lse if running is None else torch.logaddexp(running, lse)
        done += k
    assert running is not None
    return running - math.log(k_total)


def iwae_loss(
    encoder: EncoderFn,
    decoder_log_prob: LogProbFn,
    prior_log_prob: LogProbFn,
    x: Tensor,
    num_samples: int = 5,
    reduction: str = "mean",
) -> Tensor:
    r"""IWAE training loss ``−log p̂_K(x)`` with reparameterised samples (K = 1: the VAE's negative ELBO).

    .. math::
        \mathcal L_K(x) = -\operatorname{logsumexp}_{k}\big(\log p(x|z_k)+\log p(z_k)
        -\log q(z_k|x)\big)+\log K

    Args:
        encoder, decoder_log_prob, prior_log_prob, x: as in :func:`iw_log_likelihood`; the encoder's
            distribution must support ``rsample``.
        num_samples: ``K`` (default 5, the IWAE paper's k = 5 setting).
        reduction: ``"none"`` (``[B]``) | ``"mean"`` (default) | ``"sum"``.

    Returns:
        The loss (float32, or float64 for float64 ``x``).

    Source: kexue.fm/archives/8791; arXiv:1509.00519.
    """
    fn = "iwae_loss"
    _check_common(encoder, decoder_log_prob, prior_log_prob, x, fn=fn)
    k = check_int("num_samples", num_samples, fn=fn, min=1)
    red = check_reduction(reduction, fn=fn)
    assert k is not None
    dist = _encode(encoder, x, fn=fn)
    if not getattr(dist, "has_rsample", True):
        fail(fn, "encoder", "a reparameterisable distribution (has_rsample=True)", dist, exc=TypeError)
    lw = _log_weights(dist, decoder_log_prob, prior_log_prob, x, k, reparam=True, fn=fn)
    return apply_reduction(-(torch.logsumexp(lw, 0) - math.log(k)), red)


def bits_per_dim(log_likelihood: Tensor, num_dims: int, num_levels: int | None = None) -> Tensor:
    r"""Convert ``log p(x)`` (nats, per example) to bits per dimension.

    .. math:: \text{bpd} = -\frac{\log p(x)}{D\ln 2} + \log_2 L

    where the ``+ log2 L`` term applies when ``num_levels = L`` is given: the data were ``L`` discrete
    levels scaled to ``[0, 1]`` and uniformly dequantised, so a continuous density on ``[0, 1]^D`` turns
    into a probability of the discrete image by the bin volume ``L^{-D}``. Leave it ``None`` for
    discrete likelihoods (e.g. binarised data with a Bernoulli decoder).

    Args:
        log_likelihood: log-likelihoods in nats, any shape.
        num_dims: ``D``, the number of data dimensions per example (784 for 28×28 images).
        num_levels: ``L`` for dequantised data in ``[0, 1]`` (256 for 8-bit images), or ``None``.

    Source: kexue.fm/archives/8791 (bits/dim of the estimate).
    """
    fn = "bits_per_dim"
    check_tensor("log_likelihood", log_likelihood, fn=fn, kind="float")
    d = check_int("num_dims", num_dims, fn=fn, min=1)
    lv = check_int("num_levels", num_levels, fn=fn, min=2, allow_none=True)
    assert d is not None
    out = -log_likelihood / (d * math.log(2.0))
    return out + math.log2(lv) if lv is not None else out


def residual_normal_kl(delta_mu: Tensor, delta_log_sigma: Tensor, log_sigma: Tensor) -> Tensor:
    r"""NVAE's residual-posterior KL, elementwise: ``KL(N(μ+Δμ, σ²Δσ²) ‖ N(μ, σ²))``.

    .. math::
        \mathrm{KL}_i =
        \tfrac12\Big(\frac{\Delta\mu_i^2}{\sigma_i^2}+\Delta\sigma_i^2-\log\Delta\sigma_i^2-1\Big)

    with ``σ = exp(log_sigma)`` (the prior's scale) and ``Δσ = exp(delta_log_sigma)``. The posterior is
    parameterised relative to the prior, so the KL does not depend on ``μ`` and is 0 at ``Δμ = 0,
    Δσ = 1``. ``Δσ² − 1 − log Δσ²`` is computed with ``expm1`` so it stays accurate near Δσ = 1. Sum over
    the latent dims yourself (``.sum(-1)``) for a per-example KL.

    Args:
        delta_mu: ``Δμ``. delta_log_sigma: ``log Δσ``. log_sigma: ``log σ`` of the prior. All broadcast.

    Returns:
        The elementwise KL (broadcast shape; float32 for half inputs).

    Source: kexue.fm/archives/7574; Vahdat & Kautz, NVAE, arXiv:2007.03898 (eq. 2).
    """
    fn = "residual_normal_kl"
    for name, t in (("delta_mu", delta_mu), ("delta_log_sigma", delta_log_sigma), ("log_sigma", log_sigma)):
        check_tensor(name, t, fn=fn, kind="float")
    try:
        torch.broadcast_shapes(delta_mu.shape, delta_log_sigma.shape, log_sigma.shape)
    except RuntimeError:
        raise ValueError(
            f"{fn}(): arguments 'delta_mu' {tuple(delta_mu.shape)}, 'delta_log_sigma' "
            f"{tuple(delta_log_sigma.shape)} and 'log_sigma' {tuple(log_sigma.shape)} must broadcast"
        ) from None

    def up(t: Tensor) -> Tensor:
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    dm, dls, ls = up(delta_mu), up(delta_log_sigma), up(log_sigma)
    two = 2.0 * dls
    return 0.5 * (dm.square() * torch.exp(-2.0 * ls) + torch.expm1(two) - two)
