"""Adversarial training on embeddings: FGM (one normalized ascent step) and PGD (several projected steps).

Both are explicit two-pass objects used from a plain training loop::

    fgm = FGM(model.get_input_embeddings(), epsilon=0.5)
    for batch in loader:
        optimizer.zero_grad()
        loss = fgm.step(lambda: model(**batch).loss)   # clean pass, attack pass, backward, restore
        optimizer.step()

Source: kexue.fm/archives/7234 (FGM on the BERT embedding matrix) and kexue.fm/archives/7466;
Goodfellow et al. arXiv 1412.6572 (FGM), Madry et al. arXiv 1706.06083 (PGD), Miyato et al.
arXiv 1605.07725 (perturbing embeddings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from trainwell._validation import check_bool, check_finite_number, check_int
from trainwell.regularizers._common import (
    BackwardFn,
    EmbeddingAttack,
    freeze_bn_stats,
    sync_context,
)

__all__ = ["FGM", "PGD"]

# the shared block lives in _common; the old private name stays importable from here
_EmbeddingAttack = EmbeddingAttack


class FGM(EmbeddingAttack):
    """Fast Gradient Method on an embedding: one L2-normalized ascent step, then descent on the attacked loss.

    With ``g = ∇L`` from a clean pass (``L`` the scalar loss ``closure()`` returns), the perturbation is

    * ``mode='matrix'`` (the post, default): ``Δ = ε·g_E/(‖g_E‖_F + 1e-8)`` added to the embedding
      *matrix* ``E`` (one global norm; only rows of tokens present in the batch move; every occurrence
      of a token shares the perturbation);
    * ``mode='output'``: ``Δ_b = ε·g_b/‖g_b‖`` added to the embedding *output* of sample ``b``
      (per-sample norm computed scale-free, so ``‖Δ_b‖ = ε`` exactly and the step does not depend on
      the batch size; via a forward hook; use this with tied input/output embeddings).

    ``step`` then backpropagates ``L(x + Δ)`` (``include_clean_loss=False``, the post's objective) or
    ``L(x) + L(x + Δ)`` (``include_clean_loss=True``, the common PyTorch variant, e.g. bert4torch).
    To first order in ε this trains ``L + ε‖∇_x L‖`` (kexue.fm/archives/7466); the un-normalized step
    ``Δ = ε g`` is :class:`~trainwell.regularizers.FastGradientPenalty` (``L + ε/2‖∇_x L‖²``).

    Shape:
        ``closure()`` returns a scalar loss. Δ has the shape of ``embedding.weight`` (``[V, D]``,
        ``mode='matrix'``) or of the embedding output (``[B, ..., D]``, ``mode='output'``: one norm per
        sample, over all dims but the first). :meth:`step` returns the clean loss (a detached scalar).

    Example::

        model = nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(6 * 16, 2))
        opt, fgm = torch.optim.SGD(model.parameters(), lr=0.1), FGM(model[0], epsilon=0.5)
        ids, y = torch.randint(100, (4, 6)), torch.randint(2, (4,))
        loss = fgm.step(lambda: F.cross_entropy(model(ids), y))  # .grad: gradient of the attacked loss
        opt.step()

    Args:
        embedding: the module to perturb, e.g. ``model.get_input_embeddings()`` (never a name substring).
        epsilon: perturbation norm ε ≥ 0 (default 1.0; the post's CLUE runs used 0.5). ε = 0 is the
            plain training step.
        mode: ``'matrix'`` or ``'output'`` (see above).
        include_clean_loss: also backpropagate the clean loss (default False).
        ddp_model: the ``DistributedDataParallel`` wrapper when training with DDP; the clean pass runs
            under its ``no_sync()`` so only the final backward all-reduces. In matrix mode each rank
            perturbs along its own micro-batch direction; output mode (per-sample directions) matches
            the single-process step on the union batch.
        replay_rng: give the attack pass the same dropout masks as the clean pass (default False).
        freeze_bn: keep BatchNorm running statistics out of the attack pass (default True).

    Source: kexue.fm/archives/7234, kexue.fm/archives/7466; arXiv 1412.6572, arXiv 1605.07725.
    """

    _name = "FGM"

    def __init__(
        self,
        embedding: Any,
        epsilon: float = 1.0,
        *,
        mode: str = "matrix",
        include_clean_loss: bool = False,
        ddp_model: Any = None,
        replay_rng: bool = False,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__(
            embedding,
            epsilon=epsilon,
            mode=mode,
            ddp_model=ddp_model,
            replay_rng=replay_rng,
            freeze_bn=freeze_bn,
        )
        self.include_clean_loss: bool = check_bool("include_clean_loss", include_clean_loss, fn=self._name)

    def step(
        self,
        closure: Callable[[], Tensor],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """Clean pass, attack pass and backward; leaves the gradients in ``.grad``; returns the clean loss.

        Args:
            closure: runs the forward pass and returns the scalar loss (called twice).
            backward: how to backpropagate a loss into ``.grad`` (default ``loss.backward()``), e.g.
                ``lambda l: scaler.scale(l).backward()``.
            scaler: a ``GradScaler``; used for the default ``backward`` and to scale the direction's
                ``autograd.grad`` (unscaled afterwards). A non-finite direction (overflow) skips the
                perturbation for this step (``self.perturbed`` is False); the weights stay intact.

        Returns:
            The clean loss, detached.
        """
        fn, do_backward, scale, rng = self._start(closure, backward, scaler)
        if self.epsilon == 0.0 and not self.include_clean_loss:
            return self._plain(closure, fn, do_backward)
        loss, grads = self._clean(closure, fn, do_backward, scale)
        deltas = [self.epsilon * self._normalized(g) for g in grads] if self._finite(grads) else None
        self._final(closure, fn, do_backward, deltas, rng)
        return loss.detach()


class PGD(EmbeddingAttack):
    """Projected Gradient Descent adversarial training on an embedding (K projected ascent steps).

    Starting from ``r_0 = 0``: ``r_k = Π_ε(r_{k-1} + α·g_k/‖g_k‖)``, ``g_k`` the gradient at
    ``x + r_{k-1}``, ``Π_ε`` the rescaling back onto the ε-ball (global norm in ``mode='matrix'``,
    per-sample in ``mode='output'``). Intermediate gradients are taken with ``autograd.grad`` (no
    ``.grad`` touched, no DDP sync); the final backward is on ``L(x + r_K)`` (plus the clean loss with
    ``include_clean_loss=True``, the popular NLP variant, e.g. bert4torch). ``steps`` forward passes
    follow the clean one. ``PGD(steps=1, alpha=epsilon)`` is :class:`FGM`.

    Shape:
        As :class:`FGM`: ``closure()`` returns a scalar loss; ``r`` has the shape of ``embedding.weight``
        (``mode='matrix'``) or of the embedding output (``mode='output'``); :meth:`step` returns the clean
        loss (a detached scalar).

    Example::

        model = nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(6 * 16, 2))
        opt, pgd = torch.optim.SGD(model.parameters(), lr=0.1), PGD(model[0], epsilon=1.0, alpha=0.3, steps=3)
        ids, y = torch.randint(100, (4, 6)), torch.randint(2, (4,))
        loss = pgd.step(lambda: F.cross_entropy(model(ids), y))  # 1 clean + 3 attack passes
        opt.step()

    Args:
        embedding: the module to perturb (``model.get_input_embeddings()``).
        epsilon: radius ε ≥ 0 of the ball (default 1.0).
        alpha: step size α > 0 of each ascent step (default 0.3).
        steps: number K ≥ 1 of ascent steps (default 3).
        mode, include_clean_loss, ddp_model, replay_rng, freeze_bn: as in :class:`FGM`.

    Source: Madry et al. arXiv 1706.06083; kexue.fm/archives/7234.
    """

    _name = "PGD"

    def __init__(
        self,
        embedding: Any,
        epsilon: float = 1.0,
        alpha: float = 0.3,
        steps: int = 3,
        *,
        mode: str = "matrix",
        include_clean_loss: bool = False,
        ddp_model: Any = None,
        replay_rng: bool = False,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__(
            embedding,
            epsilon=epsilon,
            mode=mode,
            ddp_model=ddp_model,
            replay_rng=replay_rng,
            freeze_bn=freeze_bn,
        )
        self.alpha: float = check_finite_number("alpha", alpha, fn=self._name, min=0.0, min_inclusive=False)
        steps_v = check_int("steps", steps, fn=self._name, min=1)
        self.steps: int = steps_v
        self.include_clean_loss: bool = check_bool("include_clean_loss", include_clean_loss, fn=self._name)

    def _project(self, r: Tensor) -> Tensor:
        if self.mode == "output" and r.dim() >= 1:
            n = r.reshape(r.shape[0], -1).norm(dim=1).view(-1, *([1] * (r.dim() - 1)))
        else:
            n = r.norm()
        factor = torch.where(n > self.epsilon, self.epsilon / n.clamp_min(1e-30), torch.ones_like(n))
        return r * factor

    def step(
        self,
        closure: Callable[[], Tensor],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """Clean pass, ``steps`` attack passes, final backward; returns the clean loss (detached).

        Arguments as in :meth:`FGM.step`.
        """
        fn, do_backward, scale, rng = self._start(closure, backward, scaler)
        if self.epsilon == 0.0 and not self.include_clean_loss:
            return self._plain(closure, fn, do_backward)
        loss, grads = self._clean(closure, fn, do_backward, scale)
        if not self._finite(grads):
            self._final(closure, fn, do_backward, None, rng)
            return loss.detach()
        rs = [torch.zeros_like(g) for g in grads]
        for k in range(self.steps):
            rs = [self._project(r + self.alpha * self._normalized(g)) for r, g in zip(rs, grads)]
            if k == self.steps - 1:
                break
            rng.replay()
            with (
                sync_context(self.ddp_model, sync=False),
                self._applied(rs),
                freeze_bn_stats(enabled=self.freeze_bn),
            ):
                adv, adv_targets = self._pass(closure, fn, rs)
                grads = self._grads(adv, adv_targets, scale)
            if not self._finite(grads):
                break
        self._final(closure, fn, do_backward, rs, rng)
        return loss.detach()
