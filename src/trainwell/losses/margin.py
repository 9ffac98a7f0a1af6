"""AM-Softmax (additive margin softmax) for training retrieval encoders as classifiers (post 5743).

Train the encoder as a classifier over paraphrase groups with normalised embeddings and class
centres (logits are cosines), subtract a margin ``m`` from the target cosine and scale by ``s``::

    L = −log( e^{s(cos θ_t − m)} / (e^{s(cos θ_t − m)} + Σ_{i≠t} e^{s cos θ_i}) )

then keep only the encoder and retrieve by cosine similarity.

Source: kexue.fm/archives/5743; Wang et al., "Additive Margin Softmax for Face Verification",
arXiv:1801.05599.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_choice,
    check_int,
    check_labels,
    check_number,
    check_reduction,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss

__all__ = ["AMSoftmax", "am_softmax_loss", "am_softmax_psi", "retrieval_topk_accuracy"]

PSI = ("additive", "simpler")


def am_softmax_psi(cosine: Tensor, margin: float = 0.35, psi: str = "additive") -> Tensor:
    """The target-logit transform ψ(cos θ) of the margin-softmax family (ψ(θ) ≤ cos θ).

    ``'additive'``: ``cos θ − m`` (AM-Softmax). ``'simpler'`` (the post's "simpler-a-softmax"):
    ``min(cos 4θ, cos θ)`` with ``cos 4θ = 1 − 8cos²θ + 8cos⁴θ``; ``margin`` is not used.

    Shape:
        cosine: any shape; output: the same shape.
    """
    if psi == "additive":
        return cosine - margin
    c2 = cosine * cosine
    cos4 = 1.0 - 8.0 * c2 + 8.0 * c2 * c2
    return torch.minimum(cos4, cosine)


def _am_core(
    cosine: Tensor,
    target: Tensor,
    scale: float,
    margin: float,
    psi: str,
    label_smoothing: float,
    reduction: str,
) -> Tensor:
    cos = to_compute_dtype(cosine)
    num_classes = cos.shape[-1]
    t = target.long().unsqueeze(-1)
    # Only the target column changes: scatter its transformed value into the scaled cosines.
    logits = (scale * cos).scatter(-1, t, scale * am_softmax_psi(cos.gather(-1, t), margin, psi))
    out = F.cross_entropy(
        logits.reshape(-1, num_classes),
        target.reshape(-1).long(),
        reduction="none",
        label_smoothing=label_smoothing,
    )
    return apply_reduction(out.reshape(target.shape), reduction)  # empty batch: 0, not NaN


def am_softmax_loss(
    cosine: Tensor,
    target: Tensor,
    scale: float = 30.0,
    margin: float = 0.35,
    reduction: str = "mean",
    *,
    psi: str = "additive",
    label_smoothing: float = 0.0,
) -> Tensor:
    """AM-Softmax loss from cosine similarities: ``CE(s·(cos − m·onehot(t)), t)``.

    ``m = 0`` is plain softmax CE on ``s·cos``. With ``psi='simpler'`` the target cosine becomes
    ``min(cos 4θ, cos θ)`` instead ("simpler-a-softmax", ``margin`` unused). Computed in float32.
    Defaults ``s = 30, m = 0.35`` (the AM-Softmax paper's, used by the post).

    Shape:
        cosine: ``[..., C]``; target: ``[...]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/5743; arXiv:1801.05599.

    Args:
        cosine: cosines ``[..., C]`` in [−1, 1] between normalised embeddings and class centres
            (see :meth:`AMSoftmax.cosine`).
        target: class indices ``[...]``.
        scale: ``s > 0``.
        margin: ``m ≥ 0``.
        reduction: ``'none' | 'mean' | 'sum'``.
        psi: ``'additive'`` (AM-Softmax) or ``'simpler'``.
        label_smoothing: passed to ``F.cross_entropy``.
    """
    fn = "am_softmax_loss"
    check_tensor("cosine", cosine, fn=fn, kind="float", min_ndim=1)
    check_shape_prefix("cosine", cosine, "target", target, fn=fn)
    check_labels("target", target, cosine.shape[-1], fn=fn)
    s = check_number("scale", scale, fn=fn, min=0.0, min_inclusive=False)
    m = check_number("margin", margin, fn=fn, min=0.0)
    ls = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
    reduction = check_reduction(reduction, fn=fn)
    check_choice("psi", psi, PSI, fn=fn)
    return _am_core(cosine, target, s, m, psi, ls, reduction)


class AMSoftmax(Loss):
    """AM-Softmax classifier head: owns the class centres, ``forward(embeddings, target)`` → loss.

    Embeddings and centres are L2-normalised inside ``forward`` (gradients flow through the
    normalisation, unlike Keras' post-update ``unit_norm`` constraint), so the loss is invariant to
    rescaling either. No bias. The forward pass checks shapes and dtypes only (no device-to-host
    sync); out-of-range labels are caught by ``F.cross_entropy`` itself.

    Shape:
        embeddings: ``[..., d]`` (``d = in_features``); target: ``[...]`` class indices; weight: ``[C, d]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise; :meth:`cosine`: ``[..., C]``.

    Example::

        head = AMSoftmax(in_features=16, num_classes=10, scale=30.0, margin=0.35)
        emb = torch.randn(8, 16, requires_grad=True)  # the encoder's output
        loss = head(emb, torch.randint(10, (8,)))
        loss.backward()  # gradients for the encoder and the class centres head.weight

    Source: kexue.fm/archives/5743; arXiv:1801.05599.

    Args:
        in_features: embedding size ``d``.
        num_classes: number of classes ``C`` (paraphrase groups).
        scale: ``s`` (default 30).
        margin: ``m`` (default 0.35).
        psi: ``'additive'`` or ``'simpler'`` (see :func:`am_softmax_psi`).
        reduction: ``'none' | 'mean' | 'sum'``.
        label_smoothing: passed to ``F.cross_entropy``.
    """

    _repr_fields = ("in_features", "num_classes", "scale", "margin", "psi")

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.35,
        *,
        psi: str = "additive",
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(reduction)
        fn = "AMSoftmax"
        d = check_int("in_features", in_features, fn=fn, min=1)
        c = check_int("num_classes", num_classes, fn=fn, min=1)
        self.in_features, self.num_classes = d, c
        self.scale = check_number("scale", scale, fn=fn, min=0.0, min_inclusive=False)
        self.margin = check_number("margin", margin, fn=fn, min=0.0)
        self.psi = check_choice("psi", psi, PSI, fn=fn)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
        self.weight = nn.Parameter(torch.empty(c, d, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.in_features))

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosines ``[..., C]`` between the normalised embeddings ``[..., d]`` and class centres (float32)."""
        fn = "AMSoftmax.cosine"
        check_tensor("embeddings", embeddings, fn=fn, kind="float", min_ndim=1)
        if embeddings.shape[-1] != self.in_features:
            fail(fn, "embeddings", f"a tensor whose last dim is in_features={self.in_features}", embeddings)
        z = to_compute_dtype(embeddings)
        w = self.weight.to(z.dtype)
        return F.linear(F.normalize(z, dim=-1, eps=1e-12), F.normalize(w, dim=-1, eps=1e-12))

    def forward(self, embeddings: Tensor, target: Tensor) -> Tensor:
        fn = "AMSoftmax"
        cos = self.cosine(embeddings)
        check_shape_prefix("embeddings", embeddings, "target", target, fn=fn)
        check_labels("target", target, self.num_classes, fn=fn)
        return _am_core(cos, target, self.scale, self.margin, self.psi, self.label_smoothing, self.reduction)


@torch.no_grad()
def retrieval_topk_accuracy(
    embeddings: Tensor, groups: Tensor, k: int | Sequence[int] = (1, 5, 10), *, chunk_size: int = 1024
) -> dict[int, float]:
    """Top-k retrieval hit rate of the post's evaluation protocol.

    Every item is a query against all *other* items ranked by cosine similarity; a query hits at k
    when some item of its own group is among its k nearest. Queries whose group has no other member
    cannot hit and are left out. Similarities are computed in float32 in chunks of ``chunk_size``
    queries (memory ``chunk_size × N``). Ties are broken by index order of ``torch.topk``.

    Source: kexue.fm/archives/5743 (held-out groups never seen in training).

    Args:
        embeddings: ``[N, d]``.
        groups: ``[N]`` integer group ids.
        k: one or several cut-offs.
        chunk_size: queries per chunk.

    Returns:
        ``{k: hit rate}``.
    """
    fn = "retrieval_topk_accuracy"
    check_tensor("embeddings", embeddings, fn=fn, kind="float", ndim=2)
    check_tensor("groups", groups, fn=fn, kind="int", ndim=1)
    if groups.shape[0] != embeddings.shape[0]:
        fail(fn, "groups", f"a 1-D tensor of {embeddings.shape[0]} group ids (one per embedding)", groups)
    ks = [k] if isinstance(k, int) else list(k)
    if not ks:
        fail(fn, "k", "a non-empty sequence of ints", k)
    for kk in ks:
        check_int("k", kk, fn=fn, min=1)
    check_int("chunk_size", chunk_size, fn=fn, min=1)
    n = embeddings.shape[0]
    z = F.normalize(embeddings.float(), dim=-1)
    kmax = min(max(ks), max(n - 1, 0))
    hits = {kk: 0 for kk in ks}
    counted = 0
    same_count = (groups.unsqueeze(0) == groups.unsqueeze(1)).sum(1) if n <= chunk_size else None
    for lo in range(0, n, chunk_size):
        hi = min(n, lo + chunk_size)
        sim = z[lo:hi] @ z.T
        rows = torch.arange(lo, hi, device=z.device)
        sim[rows - lo, rows] = float("-inf")  # never retrieve the query itself
        same = groups[lo:hi].unsqueeze(1) == groups.unsqueeze(0)
        has_other = (same.sum(1) if same_count is None else same_count[lo:hi]) > 1
        if kmax == 0:
            continue
        top = sim.topk(kmax, dim=1).indices
        match = same.gather(1, top)
        for kk in ks:
            hits[kk] += int((match[:, : min(kk, kmax)].any(1) & has_other).sum())
        counted += int(has_other.sum())
    return {kk: (hits[kk] / counted if counted else float("nan")) for kk in ks}
