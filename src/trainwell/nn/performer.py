"""Performer / FAVOR+: softmax attention in linear time through positive random features.

``exp(q·k) = E_ω[exp(ω·q − ‖q‖²/2) · exp(ω·k − ‖k‖²/2)]`` for ``ω ~ N(0, I_d)``, so with ``m`` draws
``φ(x) = m^{-1/2} [exp(ω_l·x − ‖x‖²/2)]_l`` gives ``φ(q)·φ(k) ≈ exp(q·k)`` with positive features.
Applying ``φ`` to ``q/d^{1/4}`` and ``k/d^{1/4}`` approximates ``exp(q·k/√d)``, and attention becomes
``φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1)``: O(n·m·d) time and O(n·m) memory instead of O(n²).

- :func:`random_projection` — the ``[m, d]`` matrix of ω's: Haar-orthogonal blocks (QR with the sign of
  ``diag(R)`` folded in — plain QR is *not* Haar and biases the estimator), norms chi(d)-distributed,
  chi(d) quantiles, or fixed √d.
- :func:`favor_features` — positive, hyperbolic or trig features of ``x`` with the stabilisers of the
  reference code (query rows: their own max; keys: one max over the whole sequence).
- :func:`favor_attention` — bidirectional or causal FAVOR+; causal mode uses chunked prefix sums with no
  Python loop over chunks (per-chunk ``Kfᵀ V`` blocks, an exclusive cumsum over chunks, the intra-chunk
  part as one batched masked matmul), memory O(n·m + (n/c)·m·d_v).
- :class:`FavorAttention` — the module: buffer ``projection``, ``redraw_features``, ``redraw_interval``.

Source: kexue.fm/archives/7921; Choromanski et al., "Rethinking Attention with Performers",
arXiv:2009.14794; orthogonal random features arXiv:1703.00864.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_tensor,
    fail,
)

__all__ = [
    "FEATURE_TYPES",
    "NORM_SAMPLINGS",
    "FavorAttention",
    "favor_attention",
    "favor_features",
    "random_projection",
]

FEATURE_TYPES = ("positive", "hyperbolic", "trig")
NORM_SAMPLINGS = ("chi", "quantile", "fixed")


# --------------------------------------------------------------------------------------------- projection


def _chi_quantiles(d: int, m: int, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """``R_i`` with ``P_d(r <= R_i) = i/(m+1)``, i = 1..m, for the chi distribution with ``d`` dof.

    ``P_d(r <= R) = P(d/2, R²/2)`` (regularised lower incomplete gamma); solved by bisection in float64.
    """
    p = torch.arange(1, m + 1, dtype=torch.float64) / (m + 1)
    a = torch.tensor(d / 2.0, dtype=torch.float64)
    lo = torch.zeros(m, dtype=torch.float64)
    hi = torch.full((m,), math.sqrt(d) + 12.0, dtype=torch.float64)
    for _ in range(64):
        mid = (lo + hi) / 2
        below = torch.special.gammainc(a, mid * mid / 2) < p
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return ((lo + hi) / 2).to(device=device, dtype=dtype)


def random_projection(
    nb_features: int,
    d: int,
    *,
    orthogonal: bool = True,
    norm_sampling: str = "chi",
    haar: bool = True,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw the ``[nb_features, d]`` random feature matrix of FAVOR+ (or a batch of independent ones).

    With ``orthogonal=True`` the rows come in blocks of ``d`` mutually orthogonal directions (⌈m/d⌉
    independent blocks, the last one truncated). Each block is the ``Q`` of ``qr(G)``, ``G ~ N(0, I)``,
    with column ``j`` multiplied by ``sign(R_jj)``: that makes it Haar-distributed. ``haar=False`` keeps the
    raw LAPACK ``Q`` (what the reference code does) — biased; offered only to demonstrate the pitfall.
    Row norms: ``"chi"`` the norm of an independent Gaussian vector (so each row is marginally
    ``N(0, I_d)``), ``"quantile"`` the chi(d) quantiles ``P_d(r <= R_i) = i/(m+1)`` in random order (the
    post's "even norms"), ``"fixed"`` √d (lower variance at small m, biased). With ``orthogonal=False``
    the directions are i.i.d. and ``"chi"`` returns plain ``N(0, I_d)`` rows.

    Args:
        nb_features: m (>= 1). d: feature dimension (the head width).
        batch_shape: leading dims of independent draws (e.g. ``(H,)`` for one projection per head).
        generator: the random source (its device is where the draw happens).

    Source: kexue.fm/archives/7921; arXiv:2009.14794, arXiv:1703.00864.

    Shape:
        returns ``[*batch_shape, nb_features, d]``.
    """
    fn = "random_projection"
    m = check_int("nb_features", nb_features, fn=fn, min=1)
    dd = check_int("d", d, fn=fn, min=1)
    assert m is not None and dd is not None
    check_bool("orthogonal", orthogonal, fn=fn)
    check_bool("haar", haar, fn=fn)
    check_choice("norm_sampling", norm_sampling, NORM_SAMPLINGS, fn=fn)
    if not isinstance(batch_shape, tuple) or not all(isinstance(b, int) and b >= 1 for b in batch_shape):
        fail(fn, "batch_shape", "a tuple of positive ints", batch_shape, exc=TypeError)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        fail(fn, "dtype", "a floating dtype", dtype, exc=TypeError)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    kw: dict[str, Any] = {"generator": generator, "device": gen_device, "dtype": torch.float64}
    bs = tuple(batch_shape)
    if orthogonal:
        nblocks = -(-m // dd)
        g = torch.randn(*bs, nblocks, dd, dd, **kw)
        q, r = torch.linalg.qr(g)
        if haar:
            sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
            q = q * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-2)  # column j × sign(R_jj)
        # rows of qᵀ are orthonormal; stack the blocks' rows
        directions = q.transpose(-1, -2).reshape(*bs, nblocks * dd, dd)[..., :m, :]
        norms = torch.randn(*bs, m, dd, **kw).norm(dim=-1) if norm_sampling == "chi" else None
    else:
        w = torch.randn(*bs, m, dd, **kw)
        norms = w.norm(dim=-1)
        directions = w / norms.clamp_min(1e-300).unsqueeze(-1)
    if norm_sampling == "quantile":
        q_norms = _chi_quantiles(dd, m, torch.float64, gen_device)
        perm = torch.rand(*bs, m, generator=generator, device=gen_device, dtype=torch.float64).argsort(-1)
        norms = q_norms[perm]
    elif norm_sampling == "fixed":
        norms = torch.full((*bs, m), math.sqrt(dd), dtype=torch.float64, device=gen_device)
    assert norms is not None
    w = directions * norms.unsqueeze(-1)
    return w.to(device=device if device is not None else gen_device, dtype=dtype)


# --------------------------------------------------------------------------------------------- features


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_qkv(fn: str, q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, fn=fn, kind="float", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        fail(fn, "k", f"a tensor whose last dim equals q's ({q.shape[-1]})", k)
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"{fn}(): argument 'v' must have the shape of 'k' up to the last dim {tuple(k.shape[:-1])}, "
            f"got {tuple(v.shape)}"
        )
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"{fn}(): arguments 'q' and 'k' must share their leading dims, got {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )


def _check_projection(fn: str, projection: Tensor, d: int, lead: tuple[int, ...]) -> None:
    check_tensor("projection", projection, fn=fn, kind="float", min_ndim=2)
    if projection.shape[-1] != d:
        fail(fn, "projection", f"a [m, {d}] tensor (d = the last dim of q and k)", projection)
    if projection.shape[-2] < 1:
        fail(fn, "projection", "a tensor with at least one row (m >= 1)", projection)
    if projection.dim() > 2:
        try:
            torch.broadcast_shapes(tuple(projection.shape[:-2]), lead)
        except RuntimeError:
            raise ValueError(
                f"{fn}(): argument 'projection' {tuple(projection.shape)}: its leading dims must broadcast "
                f"against the inputs' leading dims {lead}"
            ) from None


def _key_mask(fn: str, attention_mask: Tensor | None, k: Tensor) -> Tensor | None:
    """HF-style key mask broadcast to ``k.shape[:-1]`` as bool (True = real token)."""
    if attention_mask is None:
        return None
    check_tensor("attention_mask", attention_mask, fn=fn, kind=("bool", "int", "float"), min_ndim=1)
    want = tuple(k.shape[:-1])
    if attention_mask.shape[-1] != want[-1]:
        fail(fn, "attention_mask", f"a [..., {want[-1]}] mask (last dim = the key length)", attention_mask)
    mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0
    # A [B, n] mask for [B, H, n, d] keys: insert the head dims.
    while mask.dim() < len(want):
        mask = mask.unsqueeze(1) if mask.dim() >= 2 else mask.unsqueeze(0)
    try:
        return mask.expand(want)
    except RuntimeError:
        raise ValueError(
            f"{fn}(): argument 'attention_mask' {tuple(attention_mask.shape)} must broadcast to the keys' "
            f"leading shape {want}"
        ) from None


def favor_features(
    x: Tensor,
    projection: Tensor,
    is_query: bool,
    *,
    feature_type: str = "positive",
    eps: float = 1e-6,
    scale: float | None = None,
    stabilize: bool = True,
    attention_mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """Random features ``φ(x)`` with ``φ(q)·φ(k) ≈ exp(q·k/√d)`` (up to row constants that cancel).

    With ``x' = scale·x`` (``scale`` defaults to ``d^{-1/4}``, the softmax temperature split between
    queries and keys) and ``a_l = ω_l·x' − ‖x'‖²/2``:

    - ``"positive"``: ``φ(x) = m^{-1/2} [exp(a_l − c) + ε]_l``;
    - ``"hyperbolic"``: ``φ(x) = (2m)^{-1/2} [exp(a_l − c) + ε, exp(−ω_l·x' − ‖x'‖²/2 − c) + ε]_l`` (2m
      features);
    - ``"trig"``: ``φ(x) = m^{-1/2} exp(‖x'‖²/2 − c) [cos(ω_l·x'), sin(ω_l·x')]_l`` (2m features, may be
      negative: high variance where ``exp(q·k)`` is small).

    Stabiliser ``c`` (``stabilize=True``): for queries the max of each row's exponents (a per-query constant,
    cancels in the attention ratio); for keys one max over all (non-padded) positions and features of the
    sequence (a constant shared by all keys, cancels too; a per-key constant would not). It is detached.
    Padded keys (``attention_mask`` False) get all-zero feature rows.

    Args:
        x: ``[..., n, d]`` queries or keys (unscaled).
        projection: ``[m, d]`` rows ω (or ``[..., m, d]`` broadcasting against ``x``'s leading dims, e.g. one
            projection per head).
        is_query: which stabiliser to use.
        feature_type: ``"positive"`` (default), ``"hyperbolic"`` or ``"trig"``.
        eps: added after exponentiation (positive/hyperbolic).
        scale: multiplies ``x`` first; ``None`` = ``d^{-1/4}``; ``1.0`` gives ``φ(x)·φ(y) ≈ exp(x·y)``.
        stabilize: subtract the max (turn off only to test that it cancels).
        attention_mask: optional ``[..., n]`` key mask (1/True = real token), keys only.
        causal: keys of causal attention: ``ε`` is anchored to the first position's scale,
            ``φ(k_j) = m^{-1/2} (exp(a_j − c) + ε·exp(min(a_0^max − c, 0)))``, so the sequence max
            ``c`` (which depends on future tokens) cancels exactly, ε term included.

    Shape:
        ``[..., n, m]`` (``[..., n, 2m]`` for hyperbolic and trig), float32 for half inputs.

    Source: kexue.fm/archives/7921; arXiv:2009.14794.
    """
    fn = "favor_features"
    check_tensor("x", x, fn=fn, kind="float", min_ndim=2)
    _check_projection(fn, projection, x.shape[-1], tuple(x.shape[:-2]))
    check_bool("is_query", is_query, fn=fn)
    check_choice("feature_type", feature_type, FEATURE_TYPES, fn=fn)
    e = check_number("eps", eps, fn=fn, min=0.0)
    assert e is not None
    s = check_number("scale", scale, fn=fn, min=0.0, min_inclusive=False, allow_none=True)
    check_bool("stabilize", stabilize, fn=fn)
    check_bool("causal", causal, fn=fn)
    if is_query and attention_mask is not None:
        raise ValueError(f"{fn}(): argument 'attention_mask' applies to keys only (is_query=False)")
    mask = _key_mask(fn, attention_mask, x) if not is_query else None
    return _features(x, projection, is_query, feature_type, e, s, stabilize, mask, causal)


def _features(
    x: Tensor,
    projection: Tensor,
    is_query: bool,
    feature_type: str,
    eps: float,
    scale: float | None,
    stabilize: bool,
    mask: Tensor | None,
    causal: bool = False,
) -> Tensor:
    cd = _compute_dtype(x)
    d = x.shape[-1]
    m = projection.shape[-2]
    xs = x.to(cd) * (d**-0.25 if scale is None else scale)
    w = projection.to(device=x.device, dtype=cd)
    proj = torch.matmul(xs, w.transpose(-1, -2))  # [..., n, m]
    half_sq = 0.5 * (xs * xs).sum(-1, keepdim=True)  # [..., n, 1]
    if feature_type == "trig":
        expo = half_sq
        if stabilize:
            expo = expo - _stabiliser(expo, is_query, mask)
        amp = torch.exp(expo) * m**-0.5
        feats = torch.cat([torch.cos(proj), torch.sin(proj)], -1) * amp
    else:
        if feature_type == "hyperbolic":
            expo = torch.cat([proj, -proj], -1) - half_sq
            norm = (2 * m) ** -0.5
        else:
            expo = proj - half_sq
            norm = m**-0.5
        eps_t: Tensor | float = eps
        if stabilize:
            c = _stabiliser(expo, is_query, mask)
            if causal and not is_query and eps > 0:
                # anchor ε to position 0 (in everyone's past): exp(-c) then scales ε too and cancels
                with torch.no_grad():
                    a0 = expo[..., :1, :].amax(-1, keepdim=True)
                    eps_t = eps * torch.exp(torch.clamp(a0 - c, max=0.0))
            expo = expo - c
        feats = (torch.exp(expo) + eps_t) * norm  # ε inside, as in the reference code
    if mask is not None:
        feats = feats * mask.unsqueeze(-1).to(feats.dtype)
    return feats


def _stabiliser(expo: Tensor, is_query: bool, mask: Tensor | None) -> Tensor:
    """Detached max: per query row, or one per sequence over the real keys."""
    with torch.no_grad():
        if is_query:
            return expo.amax(-1, keepdim=True)
        if mask is not None:
            expo = expo.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        c = expo.amax(dim=(-2, -1), keepdim=True)
        return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


# --------------------------------------------------------------------------------------------- attention


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with rows whose denominator is exactly 0 (no real key) giving 0."""
    den = den.unsqueeze(-1)
    return num / torch.where(den == 0, torch.ones_like(den), den)


def _bidirectional(qf: Tensor, kf: Tensor, v: Tensor) -> Tensor:
    kv = torch.matmul(kf.transpose(-1, -2), v)  # [..., m, d_v]
    z = kf.sum(-2)  # [..., m]
    num = torch.matmul(qf, kv)
    den = torch.matmul(qf, z.unsqueeze(-1)).squeeze(-1)
    return _safe_div(num, den)


def _causal(qf: Tensor, kf: Tensor, v: Tensor, chunk: int) -> Tensor:
    """Causal linear attention by chunked prefix sums, batched over chunks (no Python loop)."""
    n = qf.shape[-2]
    c = max(1, min(chunk, n))
    pad = (-n) % c
    if pad:
        # zero feature rows contribute nothing to sums; the padded outputs are dropped below
        qf = torch.nn.functional.pad(qf, (0, 0, 0, pad))
        kf = torch.nn.functional.pad(kf, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    lead = qf.shape[:-2]
    nc = (n + pad) // c
    qc = qf.reshape(*lead, nc, c, qf.shape[-1])
    kc = kf.reshape(*lead, nc, c, kf.shape[-1])
    vc = v.reshape(*lead, nc, c, v.shape[-1])
    # inter-chunk: exclusive prefix sums of the per-chunk kᵀv blocks and key sums
    blocks = torch.matmul(kc.transpose(-1, -2), vc)  # [..., nc, m, d_v]
    s_prev = torch.cumsum(blocks, dim=-3) - blocks
    zsum = kc.sum(-2)  # [..., nc, m]
    z_prev = torch.cumsum(zsum, dim=-2) - zsum
    num = torch.matmul(qc, s_prev)  # [..., nc, c, d_v]
    den = torch.matmul(qc, z_prev.unsqueeze(-1)).squeeze(-1)  # [..., nc, c]
    # intra-chunk: one batched lower-triangular matmul
    a = torch.matmul(qc, kc.transpose(-1, -2))  # [..., nc, c, c]
    tri = torch.ones(c, c, dtype=torch.bool, device=a.device).tril_()
    a = a.masked_fill(~tri, 0.0)
    num = num + torch.matmul(a, vc)
    den = den + a.sum(-1)
    out = _safe_div(num, den).reshape(*lead, nc * c, v.shape[-1])
    return out[..., :n, :]


def favor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    causal: bool = False,
    attention_mask: Tensor | None = None,
    eps: float = 1e-6,
    chunk_size: int = 128,
    *,
    feature_type: str = "positive",
    stabilize: bool = True,
) -> Tensor:
    """FAVOR+ attention: ``φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1)``, bidirectional or causal, in linear time.

    ``φ`` = :func:`favor_features` applied to ``q/d^{1/4}`` and ``k/d^{1/4}`` (pass *unscaled* q, k), so
    ``φ(q)·φ(k)`` estimates ``exp(q·k/√d)`` without bias and the output estimates softmax attention.
    Causal: ``out_i = φ(q_i)·S_i / φ(q_i)·z_i`` with ``S_i = Σ_{j<=i} φ(k_j) v_jᵀ`` and
    ``z_i = Σ_{j<=i} φ(k_j)``, computed over chunks of ``chunk_size`` positions: per-chunk blocks
    ``φ(K_c)ᵀV_c``, an exclusive cumsum over chunks, and the within-chunk part as one batched
    lower-triangular matmul — memory O(n·m + (n/c)·m·d_v + n·c), autograd through plain torch ops.

    Computed in float32 for half/bfloat16 inputs (float64 stays float64); returned in ``v``'s dtype.
    The key stabiliser is one max over the whole sequence. It cancels exactly; in causal mode the key ``eps``
    is scaled with it (anchored to position 0) so that future tokens cannot move past outputs even through
    ``eps`` (with a plain ``+eps`` the global max would leak the future at a relative size ≈ eps·e^Δ).

    Args:
        q: ``[..., n, d]`` queries; k: ``[..., n_k, d]`` keys; v: ``[..., n_k, d_v]`` values.
        projection: ``[m, d]`` random features (:func:`random_projection`), or ``[..., m, d]`` broadcasting
            against the leading dims (one per head: ``random_projection(m, d, batch_shape=(H,))`` for
            ``[B, H, n, d]``).
        causal: prefix-sum (left-to-right) attention; needs ``n == n_k``.
        attention_mask: ``[..., n_k]`` Hugging Face style key mask (1/True = real token), broadcast over the
            head dims (``[B, n]`` works for ``[B, H, n, d]``); padded keys get zero feature rows.
        eps: added to the positive features after exponentiation.
        chunk_size: causal chunk length ``c``.
        feature_type: ``"positive"`` (default), ``"hyperbolic"`` or ``"trig"``.
        stabilize: max-subtraction on (only for tests).

    Shape:
        returns ``[..., n, d_v]``.

    Source: kexue.fm/archives/7921; arXiv:2009.14794.
    """
    fn = "favor_attention"
    _check_qkv(fn, q, k, v)
    _check_projection(fn, projection, q.shape[-1], tuple(q.shape[:-2]))
    check_bool("causal", causal, fn=fn)
    e = check_number("eps", eps, fn=fn, min=0.0)
    c = check_int("chunk_size", chunk_size, fn=fn, min=1)
    check_choice("feature_type", feature_type, FEATURE_TYPES, fn=fn)
    check_bool("stabilize", stabilize, fn=fn)
    assert e is not None and c is not None
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"{fn}(): causal attention needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}"
        )
    mask = _key_mask(fn, attention_mask, k)
    return _favor(q, k, v, projection, causal, mask, e, c, feature_type, stabilize)


def _favor(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    causal: bool,
    mask: Tensor | None,
    eps: float,
    chunk: int,
    feature_type: str,
    stabilize: bool,
) -> Tensor:
    cd = _compute_dtype(q)
    with torch.autocast(device_type=q.device.type, enabled=False):
        qf = _features(q, projection, True, feature_type, eps, None, stabilize, None)
        kf = _features(k, projection, False, feature_type, eps, None, stabilize, mask, causal)
        vv = v.to(cd)
        out = _causal(qf, kf, vv, chunk) if causal else _bidirectional(qf, kf, vv)
    return out.to(v.dtype)


class FavorAttention(nn.Module):
    """FAVOR+ attention core with its random features as a buffer.

    ``forward(q, k, v, attention_mask=None)`` computes :func:`favor_attention` with the buffer
    ``projection`` (``[nb_features, d_head]``, saved in the ``state_dict``, not a parameter). With
    ``redraw_interval=N`` the features are redrawn every ``N`` training-mode forward calls (the paper's
    feature redrawing; under DDP the default ``broadcast_buffers=True`` keeps ranks in sync). Defaults follow
    the spec: m = 256 (≈ d·ln d for d = 64), Haar-orthogonal blocks with chi norms, ε = 1e-6, chunk 128.

    Args:
        d_head: head width d.
        nb_features: m (must be ≥ 1; the post: several times d).
        causal: left-to-right attention (prefix sums).
        feature_type: ``"positive"`` | ``"hyperbolic"`` | ``"trig"``.
        orthogonal: Haar-orthogonal blocks (True) or i.i.d. rows.
        norm_sampling: ``"chi"`` | ``"quantile"`` | ``"fixed"`` (see :func:`random_projection`).
        redraw_interval: forward calls in training mode between redraws; ``None`` = fixed features.
        eps: added after exponentiation.
        chunk_size: causal chunk length.

    Shape:
        q ``[..., n, d_head]``, k ``[..., n_k, d_head]``, v ``[..., n_k, d_v]`` → ``[..., n, d_v]``.

    Source: kexue.fm/archives/7921; arXiv:2009.14794.
    """

    projection: Tensor

    def __init__(
        self,
        d_head: int,
        nb_features: int = 256,
        causal: bool = False,
        feature_type: str = "positive",
        orthogonal: bool = True,
        norm_sampling: str = "chi",
        redraw_interval: int | None = None,
        eps: float = 1e-6,
        chunk_size: int = 128,
    ) -> None:
        super().__init__()
        fn = "FavorAttention"
        d = check_int("d_head", d_head, fn=fn, min=1)
        m = check_int("nb_features", nb_features, fn=fn, min=1)
        assert d is not None and m is not None
        self.d_head, self.nb_features = d, m
        self.causal = check_bool("causal", causal, fn=fn)
        self.feature_type = str(check_choice("feature_type", feature_type, FEATURE_TYPES, fn=fn))
        self.orthogonal = check_bool("orthogonal", orthogonal, fn=fn)
        self.norm_sampling = str(check_choice("norm_sampling", norm_sampling, NORM_SAMPLINGS, fn=fn))
        self.redraw_interval = check_int("redraw_interval", redraw_interval, fn=fn, min=1, allow_none=True)
        e = check_number("eps", eps, fn=fn, min=0.0)
        c = check_int("chunk_size", chunk_size, fn=fn, min=1)
        assert e is not None and c is not None
        self.eps, self.chunk_size = e, c
        self._calls = 0
        self.register_buffer("projection", self._draw(None, torch.device("cpu"), torch.float32))

    def _draw(self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        return random_projection(
            self.nb_features, self.d_head, orthogonal=self.orthogonal, norm_sampling=self.norm_sampling,
            generator=generator, device=device, dtype=dtype,
        )

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw a new ``projection`` in place (same device and dtype); nothing else changes."""
        if generator is not None and not isinstance(generator, torch.Generator):
            fail("FavorAttention.redraw_features", "generator", "a torch.Generator or None", generator,
                 exc=TypeError)
        new = self._draw(generator, self.projection.device, self.projection.dtype)
        self.projection.copy_(new)

    def _count_call(self) -> None:
        """Redraw the features every ``redraw_interval`` training-mode calls."""
        if self.training and self.redraw_interval is not None:
            if self._calls > 0 and self._calls % self.redraw_interval == 0:
                self.redraw_features()
            self._calls += 1

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        self._count_call()
        fn = "FavorAttention.forward"
        _check_qkv(fn, q, k, v)
        if q.shape[-1] != self.d_head:
            fail(fn, "q", f"a [..., n, {self.d_head}] tensor (d_head)", q)
        if self.causal and q.shape[-2] != k.shape[-2]:
            raise ValueError(f"{fn}(): causal attention needs as many queries as keys, got "
                             f"{q.shape[-2]} and {k.shape[-2]}")
        mask = _key_mask(fn, attention_mask, k)
        return _favor(q, k, v, self.projection, self.causal, mask, self.eps, self.chunk_size,
                      self.feature_type, True)

    def extra_repr(self) -> str:
        return (f"d_head={self.d_head}, nb_features={self.nb_features}, causal={self.causal}, "
                f"feature_type={self.feature_type!r}, orthogonal={self.orthogonal}, "
                f"norm_sampling={self.norm_sampling!r}, redraw_interval={self.redraw_interval}")
