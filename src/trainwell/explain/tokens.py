"""Token attributions for text classifiers (integrated gradients on the token embeddings) and heat maps.

:func:`token_attributions` interpolates only the output of ``model.get_input_embeddings()`` (the token
embedding); position and segment embeddings, the attention mask and everything else stay as for the
real input. ``F`` is the probability (default, as in post 7533) or the logit of the target class.
Per token: the signed score ``Σ_d IG_{t,d}`` (the scores of a sentence sum to ``F(x) − F(x̄)`` up to
the quadrature error, reported as ``delta``) and the display score ``‖IG_t‖_2``, min–max normalised
over the sentence's real tokens (the author's choice).

:func:`render_tokens` draws a sentence as an HTML heat map (text escaped) and, optionally, a PNG through
matplotlib, with a CJK font when one is installed.

Source: kexue.fm/archives/7533; arXiv:1703.01365.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from trainwell._ops import logits_of
from trainwell._validation import check_choice, check_int, check_module, check_same_shape, check_tensor, fail
from trainwell.explain.integrated_gradients import integrated_gradients

__all__ = ["TokenAttributions", "cjk_font", "render_tokens", "token_attributions"]


class TokenAttributions(NamedTuple):
    """What :func:`token_attributions` returns.

    Attributes:
        scores: ``[B, T]`` signed token attributions (sum over embedding dims; 0 at padding).
        display: ``[B, T]`` L2 norms over embedding dims, min–max normalised to [0, 1] per sentence over
            the real tokens (0 at padding).
        delta: ``[B]`` completeness gap ``Σ_t scores − (F(x) − F(x̄))``.
        target: ``[B]`` the class explained (the predicted class when ``target=None``).
    """

    scores: Tensor
    display: Tensor
    delta: Tensor
    target: Tensor


class _ReplaceOutput:
    """Forward hook that replaces the embedding module's output by a given tensor (the interpolated rows).

    (:class:`trainwell.regularizers._common.OutputHook` *adds* a perturbation to the output; IG needs the
    output replaced exactly, so the interpolation points are bit-for-bit those of the quadrature rule.)
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.value: Tensor | None = None
        self.calls = 0
        self._handle: Any = None

    def __enter__(self) -> _ReplaceOutput:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self.value is None:
            return None
        self.calls += 1
        if not isinstance(output, Tensor) or output.shape != self.value.shape:
            raise RuntimeError(
                "token_attributions(): the input-embedding module returned "
                f"{tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__}, expected "
                f"{tuple(self.value.shape)}; the model must call get_input_embeddings() once per forward"
            )
        # A low-precision model gets its own dtype; the leaf (and so the gradient sums) stays float32.
        return self.value.to(output.dtype)


def _logits(out: Any) -> Tensor:
    return logits_of(out, fn="token_attributions")


def _token_id(model: nn.Module, given: int | None, attr: str, name: str) -> int:
    if given is not None:
        checked = check_int(name, given, fn="token_attributions", min=0)
        assert checked is not None
        return checked
    cfg = getattr(model, "config", None)
    v = getattr(cfg, attr, None) if cfg is not None else None
    if v is None:
        if attr == "pad_token_id":
            return 0
        fail("token_attributions", name, f"an int (the model config has no {attr})", given)
    return int(v)


def token_attributions(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    token_type_ids: Tensor | None = None,
    target: Any = None,
    baseline: str | int | Tensor = "zeros",
    n_steps: int = 50,
    method: str = "trapezoid",
    internal_batch_size: int | None = None,
    output: str = "probability",
    pad_token_id: int | None = None,
    mask_token_id: int | None = None,
) -> TokenAttributions:
    """Integrated gradients of a sequence classifier over its token-embedding output.

    The model is called as ``model(input_ids, attention_mask=..., token_type_ids=...)`` (ids positional,
    the masks only when given) with the output of ``model.get_input_embeddings()`` replaced by
    ``ē + α (e − ē)`` through a forward hook, so positions, segments and the mask are never interpolated.
    The interpolated batch is evaluated in chunks of ``internal_batch_size`` rows, with one forward and
    one backward per chunk; model weights are frozen during the call (restored after). Under autocast
    (bf16/fp16) the model runs in low precision while the embeddings, gradients and sums stay float32.
    Use ``model.eval()`` first (dropout would make the path noisy).

    Args:
        model: a Hugging Face ``*ForSequenceClassification`` model or any module with
            ``get_input_embeddings()`` whose forward takes the ids first and returns logits ``[B, C]``
            (or an object with ``.logits``).
        input_ids: ``[B, T]`` token ids.
        attention_mask: ``[B, T]`` (1 = real token) or None. Padding gets score 0 and is left out of
            the display normalisation.
        token_type_ids: ``[B, T]`` segment ids or None.
        target: class to explain: None (the predicted class), an int, ``B`` ints or a LongTensor ``[B]``.
        baseline: ``"zeros"`` (zero embedding, the author's choice), ``"pad"`` / ``"mask"`` (the
            embedding of the pad / mask token at every position), a token id (int), or a float tensor of
            embeddings ``[B, T, d]`` / ``[T, d]``.
        n_steps, method, internal_batch_size: as in :func:`~trainwell.explain.integrated_gradients`.
        output: ``"probability"`` (softmax probability of the target, default) or ``"logit"``.
        pad_token_id, mask_token_id: override the ids from ``model.config`` (pad defaults to 0).

    Returns:
        :class:`TokenAttributions` ``(scores, display, delta, target)``.

    Shape:
        input_ids ``[B, T]`` → scores, display ``[B, T]`` (float32), delta, target ``[B]``.

    Source: kexue.fm/archives/7533; arXiv:1703.01365.
    """
    fn = "token_attributions"
    check_module("model", model, fn=fn)
    get_emb = getattr(model, "get_input_embeddings", None)
    if not callable(get_emb):
        fail(fn, "model", "a module with get_input_embeddings() (a Hugging Face model or similar)", model,
             exc=TypeError)
    emb_module = get_emb()
    check_module("model.get_input_embeddings()", emb_module, fn=fn)
    check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None:
            check_tensor(name, t, fn=fn, kind=("int", "bool", "float"), ndim=2)
            check_same_shape("input_ids", input_ids, name, t, fn=fn)
    check_choice("output", output, ("probability", "logit"), fn=fn)
    check_int("n_steps", n_steps, fn=fn, min=1)

    with torch.no_grad():
        e = emb_module(input_ids)
    if not isinstance(e, Tensor) or e.dim() != 3 or e.shape[:2] != input_ids.shape:
        fail(fn, "model.get_input_embeddings()", "a module mapping ids [B, T] to embeddings [B, T, d]", e)
    e = e.detach().float() if e.dtype in (torch.float16, torch.bfloat16) else e.detach()
    b_emb = _baseline_embeddings(
        model, emb_module, baseline, input_ids, e, pad_token_id, mask_token_id, fn=fn
    )

    kwargs_names = ["attention_mask", "token_type_ids"]
    extras = [attention_mask, token_type_ids]
    present = [(n, t) for n, t in zip(kwargs_names, extras) if t is not None]

    hook = _ReplaceOutput(emb_module)

    def forward(emb: Tensor, ids: Tensor, *more: Tensor) -> Tensor:
        hook.value = emb
        try:
            logits = _logits(model(ids, **{n: t for (n, _), t in zip(present, more)}))
        finally:
            hook.value = None
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return logits.softmax(-1) if output == "probability" else logits

    with hook:
        if target is None:
            with torch.no_grad():
                hook.value = e
                try:
                    pred = _logits(model(input_ids, **dict(present))).argmax(-1)
                finally:
                    hook.value = None
            target = pred
        attr, delta = integrated_gradients(
            forward,
            e,
            baselines=b_emb,
            target=target,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            additional_forward_args=(input_ids, *(t for _, t in present)),
        )
    assert isinstance(attr, Tensor)
    attr = attr.float()
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    scores = attr.sum(-1) * real
    norms = attr.norm(dim=-1) * real
    big, small = torch.finfo(norms.dtype).max, torch.finfo(norms.dtype).min
    lo = torch.where(real, norms, torch.full_like(norms, big)).amin(1, keepdim=True)
    hi = torch.where(real, norms, torch.full_like(norms, small)).amax(1, keepdim=True)
    display = ((norms - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1) * real
    tgt = target if isinstance(target, Tensor) else torch.as_tensor(target, device=input_ids.device)
    tgt = tgt.to(torch.long).expand(input_ids.shape[0]).clone() if tgt.dim() == 0 else tgt.to(torch.long)
    return TokenAttributions(scores, display, delta.float(), tgt)


def _baseline_embeddings(
    model: nn.Module,
    emb_module: nn.Module,
    baseline: Any,
    input_ids: Tensor,
    e: Tensor,
    pad_token_id: int | None,
    mask_token_id: int | None,
    *,
    fn: str,
) -> Tensor:
    if isinstance(baseline, Tensor):
        check_tensor("baseline", baseline, fn=fn, kind="float")
        if baseline.shape not in (e.shape, e.shape[1:]):
            raise ValueError(
                f"{fn}(): argument 'baseline' must have the embeddings' shape {tuple(e.shape)} or "
                f"{tuple(e.shape[1:])}, got {tuple(baseline.shape)}"
            )
        return baseline.detach().to(e.dtype).expand_as(e)
    if isinstance(baseline, bool) or not isinstance(baseline, (str, int)):
        fail(
            fn,
            "baseline",
            "'zeros', 'pad', 'mask', a token id or an embedding tensor",
            baseline,
            exc=TypeError,
        )
    if isinstance(baseline, str):
        check_choice("baseline", baseline, ("zeros", "pad", "mask"), fn=fn)
        if baseline == "zeros":
            return torch.zeros_like(e)
        tok = (
            _token_id(model, pad_token_id, "pad_token_id", "pad_token_id")
            if baseline == "pad"
            else _token_id(model, mask_token_id, "mask_token_id", "mask_token_id")
        )
    else:
        tok = int(baseline)
    if tok < 0:
        fail(fn, "baseline", "a non-negative token id", baseline)
    with torch.no_grad():
        out = emb_module(torch.full_like(input_ids, tok))
    return out.detach().to(e.dtype)


# --------------------------------------------------------------------------------------------- rendering

_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK",
    "Noto Serif CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "Arial Unicode MS",
)


def cjk_font() -> str | None:
    """The name of an installed font that covers Chinese characters, or None (matplotlib's font list)."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    for fam in _CJK_FAMILIES:
        if fam in names:
            return fam
    for f in font_manager.fontManager.ttflist:
        n = f.name.lower()
        if "cjk" in n or "han" in n.split() or "hei" in n or "wenquanyi" in n or "fallback" in n:
            return str(f.name)
    # matplotlib's font cache predates fonts installed after it was built (e.g. Debian's
    # fonts-wqy-microhei, which the lab's set-up installs): register such files once, then look again.
    for path in font_manager.findSystemFonts():
        low = path.lower()
        if "wqy" in low or "cjk" in low or "droidsansfallback" in low:
            try:
                font_manager.fontManager.addfont(path)
                return str(font_manager.FontProperties(fname=path).get_name())
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def _is_cjk(text: str) -> bool:
    return any(
        "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef" for ch in text
    )


def _rgb(score: float, signed: bool) -> tuple[float, float, float]:
    s = max(-1.0, min(1.0, score))
    if signed and s < 0:  # blue for negative evidence
        return (1.0 + s * 0.75, 1.0 + s * 0.45, 1.0)
    return (1.0, 1.0 - s * 0.7, 1.0 - s * 0.75)  # red for positive / magnitude


def render_tokens(
    tokens: Sequence[str],
    scores: Tensor | Sequence[float],
    *,
    signed: bool | None = None,
    title: str | None = None,
    html_path: str | Path | None = None,
    png_path: str | Path | None = None,
    max_chars_per_line: int = 40,
) -> str:
    """Render a sentence as a heat map: an HTML snippet (returned, optionally written) and optionally a PNG.

    Colours: with ``signed`` scores red marks positive and blue negative evidence, intensity ``|s| / max|s|``;
    unsigned scores (e.g. ``display`` in [0, 1]) are shaded red by value. Token text is HTML-escaped.
    The PNG is drawn by matplotlib with a CJK font when one is installed (:func:`cjk_font`); without
    one, Chinese characters cannot be drawn and a ``UserWarning`` says so (the HTML is unaffected: the
    browser picks its own font).

    Args:
        tokens: the tokens (characters for Chinese, word pieces for English).
        scores: one score per token.
        signed: whether scores are signed; default: True when any score is negative.
        title: optional caption (escaped) above the sentence.
        html_path: write a standalone HTML page there.
        png_path: write a PNG there (needs matplotlib).
        max_chars_per_line: wrap the PNG after about this many characters.

    Returns:
        The HTML snippet (a ``<div>`` of ``<span>`` elements with a title attribute holding each score).

    Source: kexue.fm/archives/7533 (heat maps of IG scores).
    """
    fn = "render_tokens"
    if (
        isinstance(tokens, str)
        or not isinstance(tokens, Sequence)
        or not all(isinstance(t, str) for t in tokens)
    ):
        fail(fn, "tokens", "a sequence of str", tokens, exc=TypeError)
    vals = (
        scores.detach().float().reshape(-1).tolist()
        if isinstance(scores, Tensor)
        else [float(s) for s in scores]
    )
    if len(vals) != len(tokens):
        fail(fn, "scores", f"one score per token ({len(tokens)})", scores)
    check_int("max_chars_per_line", max_chars_per_line, fn=fn, min=1)
    sgn = any(v < 0 for v in vals) if signed is None else bool(signed)
    peak = max((abs(v) for v in vals), default=0.0) or 1.0
    norm = [v / peak for v in vals]
    spans = []
    for tok, v, raw in zip(tokens, norm, vals):
        r, g, b = _rgb(v, sgn)
        color = f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
        spans.append(
            f'<span style="background:{color};padding:1px 2px;border-radius:2px" '
            f'title="{raw:+.4g}">{html.escape(tok)}</span>'
        )
    cap = f'<div style="font-size:0.85em;color:#555">{html.escape(title)}</div>' if title else ""
    snippet = (
        f'<div class="tw-tokens" style="line-height:1.9;font-family:sans-serif">{cap}{"".join(spans)}</div>'
    )
    if html_path is not None:
        page = (
            f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title or "tokens")}'
            f"</title></head><body>{snippet}</body></html>\n"
        )
        Path(html_path).write_text(page, encoding="utf-8")
    if png_path is not None:
        _render_png(list(tokens), norm, sgn, title, Path(png_path), max_chars_per_line)
    return snippet


def _render_png(
    tokens: list[str], norm: list[float], signed: bool, title: str | None, path: Path, max_chars: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = None
    if any(_is_cjk(t) for t in tokens) or (title is not None and _is_cjk(title)):
        family = cjk_font()
        if family is None:
            warnings.warn(
                "render_tokens(): no CJK font is installed for matplotlib (e.g. fonts-noto-cjk or "
                "fonts-wqy-zenhei), so Chinese characters in the PNG are drawn as boxes; the HTML "
                "heat map is unaffected",
                UserWarning,
                stacklevel=3,
            )
    lines: list[list[int]] = [[]]
    width = 0.0
    for i, t in enumerate(tokens):
        w = sum(2.0 if _is_cjk(c) else 1.0 for c in t) + 0.6
        if lines[-1] and width + w > max_chars:
            lines.append([])
            width = 0.0
        lines[-1].append(i)
        width += w
    fig_w = max(3.0, 0.16 * max_chars + 0.4)
    fig_h = 0.42 * len(lines) + (0.45 if title else 0.2)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0, max_chars + 1)
    ax.set_ylim(len(lines) + (0.8 if title else 0.2), 0)
    props: dict[str, Any] = {"fontsize": 11}
    if family is not None:
        props["fontfamily"] = family
    y0 = 0.9 if title else 0.5
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        if title:
            tprops: dict[str, Any] = {"fontsize": 9, "color": "#444", "va": "center"}
            if family is not None:
                tprops["fontfamily"] = family
            ax.text(0.3, 0.35, title, **tprops)
        for row, idx in enumerate(lines):
            x = 0.3
            for i in idx:
                t = tokens[i]
                w = sum(2.0 if _is_cjk(c) else 1.0 for c in t) + 0.6
                ax.text(
                    x,
                    y0 + row,
                    t,
                    va="center",
                    ha="left",
                    bbox={"boxstyle": "square,pad=0.15", "fc": _rgb(norm[i], signed), "ec": "none"},
                    **props,
                )
                x += w
        fig.savefig(path, dpi=120)
    plt.close(fig)
