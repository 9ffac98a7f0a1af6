"""Autoregressive decoding: greedy search, batched beam search, and top-k / nucleus sampling.

One entry point, :func:`generate`, with Hugging Face ``generate``'s argument names, and three thin
wrappers (:func:`greedy_search`, :func:`beam_search`, :func:`sample`). The model is either

- a plain callable ``ids [B, t] -> next-token logits [B, V]`` (the minimal form; it sees the whole prefix
  every step, which is how the UniLM posts decode — kexue.fm/archives/6933, /7809; a callable that keeps
  its own key/value cache defines ``reorder(index)``, which beam search calls with the rows it keeps), or
- an ``nn.Module`` returning ``.logits`` ``[B, t, V]`` (a Hugging Face causal LM or any module with that
  output); when it returns a key/value cache (``cache`` / ``past_key_values``) the cache is used, so each
  step feeds only the newest token.

``logits_processor(input_ids, scores) -> scores`` follows Hugging Face's signature (used for constrained
decoding, e.g. answers restricted to passage spans). Beam search keeps all ``B × num_beams`` hypotheses
in one batch (no Python loop over batch rows) and scores finished hypotheses by
``sum log p / (generated length) ** length_penalty``. Decoding stops early once every row has ended.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import check_callable, check_int, check_number, check_tensor, fail

__all__ = ["beam_search", "generate", "greedy_search", "sample"]

LogitsProcessor = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------------------ model steps


def _per_token(v: Any, batch: int, length: int) -> bool:
    return isinstance(v, Tensor) and v.dim() == 2 and tuple(v.shape) == (batch, length)


class _Stepper:
    """Gives next-token logits for a growing batch of prefixes, with or without a key/value cache."""

    def __init__(self, model: Any, input_ids: Tensor, model_kwargs: dict[str, Any], fn: str) -> None:
        self.fn_name = fn
        self.is_module = isinstance(model, nn.Module)
        self.model = model
        self.kwargs = dict(model_kwargs)
        self.cache: Any = None
        self.use_cache = bool(self.kwargs.pop("use_cache", True)) and self.is_module
        self.cache_name: str | None = None
        self.accepts_position_ids = False
        self.keep_last = False
        if self.is_module:
            try:
                params = inspect.signature(model.forward).parameters
            except (TypeError, ValueError):  # pragma: no cover - exotic forward
                params = {}  # type: ignore[assignment]
            if "cache" in params:
                self.cache_name = "cache"
            elif "past_key_values" in params:
                self.cache_name = "past_key_values"
            self.accepts_position_ids = "position_ids" in params
            # only the last position's logits are needed (saves the LM head over the prompt)
            self.keep_last = "logits_to_keep" in params and "logits_to_keep" not in self.kwargs
            if self.cache_name is None:
                self.use_cache = False
        elif self.kwargs:
            raise TypeError(
                f"{fn}(): extra model keyword arguments {sorted(self.kwargs)} need an nn.Module model; "
                "a plain callable receives only the token ids"
            )
        b, t = input_ids.shape
        # per-token kwargs ([B, T] tensors) grow with the sequence: attention_mask by ones, others by
        # repeating their last column (e.g. a reply's segment id).
        self.grow = {k for k, v in self.kwargs.items() if _per_token(v, b, t)}
        if "attention_mask" in self.kwargs and self.kwargs["attention_mask"] is not None:
            self.grow.add("attention_mask")

    def expand(self, repeats: int) -> None:
        for k, v in list(self.kwargs.items()):
            if isinstance(v, Tensor) and v.dim() >= 1 and k in self.grow:
                self.kwargs[k] = v.repeat_interleave(repeats, dim=0)

    def reorder(self, index: Tensor) -> None:
        if not self.is_module:  # a callable that keeps its own cache says so with a reorder(index) method
            hook = getattr(self.model, "reorder", None)
            if callable(hook):
                hook(index)
            return
        for k in self.grow:
            self.kwargs[k] = self.kwargs[k].index_select(0, index)
        if self.cache is None:
            return
        if hasattr(self.cache, "reorder_cache"):
            self.cache.reorder_cache(index)
        else:  # legacy tuple of (key, value) per layer
            self.cache = tuple(tuple(t.index_select(0, index) for t in layer) for layer in self.cache)

    def append(self, tokens: Tensor) -> None:
        for k in self.grow:
            v = self.kwargs[k]
            col = torch.ones_like(v[:, -1:]) if k == "attention_mask" else v[:, -1:]
            self.kwargs[k] = torch.cat([v, col], dim=1)

    def _position_ids(self, length: int) -> Tensor | None:
        mask = self.kwargs.get("attention_mask")
        if not self.accepts_position_ids or mask is None or "position_ids" in self.kwargs:
            return None
        pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)
        return pos[:, -length:]

    def logits(self, ids: Tensor, first: bool) -> Tensor:
        if not self.is_module:
            out = self.model(ids)
            if (not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != ids.shape[0]
                    or not out.dtype.is_floating_point):
                fail(self.fn_name, "model_or_fn", "a callable returning float next-token logits [B, V]", out,
                     exc=TypeError)
            return out
        feed = ids if (first or not self.use_cache or self.cache is None) else ids[:, -1:]
        kw = dict(self.kwargs)
        if feed.shape[1] != ids.shape[1]:
            for k in self.grow:
                if k != "attention_mask":
                    kw[k] = kw[k][:, -feed.shape[1]:]
        pos = self._position_ids(feed.shape[1])
        if pos is not None:
            kw["position_ids"] = pos
        if self.keep_last:
            kw["logits_to_keep"] = 1
        if self.use_cache:
            kw["use_cache"] = True
            if self.cache is not None and self.cache_name is not None:
                kw[self.cache_name] = self.cache
        out = self.model(input_ids=feed, **kw)
        if self.use_cache:
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            self.cache = cache
            if cache is None:
                self.use_cache = False
        logits = out.logits if hasattr(out, "logits") else out
        if not isinstance(logits, Tensor) or logits.dim() not in (2, 3):
            fail(self.fn_name, "model_or_fn", "a module returning .logits [B, t, V] (or [B, V])", logits,
                 exc=TypeError)
        return logits[:, -1] if logits.dim() == 3 else logits


# --------------------------------------------------------------------------------------------- warpers


def _warp(scores: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering, like Hugging Face's warpers."""
    if temperature != 1.0:
        scores = scores / temperature
    neg = torch.finfo(scores.dtype).min
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, neg)
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum <= 1 - top_p
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, neg)
    return scores


# ---------------------------------------------------------------------------------------------- checks


def _check(
    fn: str,
    model_or_fn: Any,
    input_ids: Any,
    max_new_tokens: Any,
    eos_token_id: Any,
    pad_token_id: Any,
    num_beams: Any,
    top_k: Any,
    top_p: Any,
    temperature: Any,
    length_penalty: Any,
    logits_processor: Any,
    generator: Any,
) -> tuple[Tensor, list[int]]:
    check_callable("model_or_fn", model_or_fn, fn=fn)
    check_tensor("input_ids", input_ids, fn=fn, kind="int")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        fail(fn, "input_ids", "a non-empty [B, T] integer tensor", input_ids)
    check_int("max_new_tokens", max_new_tokens, fn=fn, min=0)
    if eos_token_id is None:
        eos: list[int] = []
    elif isinstance(eos_token_id, (list, tuple)):
        eos = [int(check_int("eos_token_id", e, fn=fn, min=0) or 0) for e in eos_token_id]
    else:
        eos = [int(check_int("eos_token_id", eos_token_id, fn=fn, min=0) or 0)]
    check_int("pad_token_id", pad_token_id, fn=fn, min=0, allow_none=True)
    check_int("num_beams", num_beams, fn=fn, min=1)
    check_int("top_k", top_k, fn=fn, min=1, allow_none=True)
    check_number("top_p", top_p, fn=fn, min=0.0, max=1.0, min_inclusive=False, allow_none=True)
    check_number("temperature", temperature, fn=fn, min=0.0, min_inclusive=False)
    check_number("length_penalty", length_penalty, fn=fn)
    check_callable("logits_processor", logits_processor, fn=fn, allow_none=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        fail(fn, "generator", "a torch.Generator or None", generator, exc=TypeError)
    return input_ids, eos


def _is_eos(tokens: Tensor, eos: list[int]) -> Tensor:
    if not eos:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, torch.tensor(eos, device=tokens.device))


# -------------------------------------------------------------------------------------------- generate


@torch.no_grad()
def generate(
    model_or_fn: Callable[..., Any],
    input_ids: Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    num_beams: int = 1,
    do_sample: bool = False,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    length_penalty: float = 1.0,
    logits_processor: LogitsProcessor | None = None,
    generator: torch.Generator | None = None,
    **model_kwargs: Any,
) -> Tensor:
    """Extend ``input_ids`` by up to ``max_new_tokens`` tokens: greedy, beam search or sampling.

    Greedy picks ``argmax`` each step; sampling draws from ``softmax(scores / temperature)`` restricted to
    the ``top_k`` most likely tokens and then to the smallest set whose mass reaches ``top_p`` (nucleus);
    beam search keeps the ``num_beams`` best prefixes by summed log-probability and returns, per row, the
    finished hypothesis with the best ``Σ log p / L ** length_penalty`` (``L`` = number of generated tokens,
    the end token included). A row ends at ``eos_token_id``; ended rows are padded with ``pad_token_id``
    (default: the first end token, else 0). Decoding stops once every row has ended.

    Args:
        model_or_fn: a callable ``ids [B, t] -> logits [B, V]`` (the whole prefix every step) or an
            ``nn.Module`` returning ``.logits [B, t, V]``; a module's key/value cache (``cache`` or
            ``past_key_values``) is used when it returns one (pass ``use_cache=False`` to recompute).
        input_ids: prompt ``[B, T]`` (or ``[T]``), integer.
        max_new_tokens: number of tokens to add at most.
        eos_token_id: end token id (or a list of them).
        pad_token_id: filler after a row has ended.
        num_beams: beam width; 1 means greedy (or sampling).
        do_sample: sample instead of taking the argmax (needs ``num_beams == 1``).
        top_k, top_p, temperature: sampling filters (temperature and top-k/top-p apply when sampling).
        length_penalty: exponent of the length normalisation in beam search.
        logits_processor: ``f(input_ids [N, t], scores [N, V]) -> scores``, applied every step before the
            sampling filters (to raw logits in greedy/sampling, to log-probabilities in beam search, as in
            Hugging Face); set entries to ``-inf`` to forbid tokens.
        generator: random generator for sampling.
        **model_kwargs: extra keyword arguments for a module model; ``[B, T]`` tensors (``attention_mask``,
            ``token_type_ids``) are extended every step (the mask with ones, others with their last column).

    Returns:
        ``[B, T + n]`` long tensor: the prompt followed by the new tokens (``n ≤ max_new_tokens``).

    Source: decoding utilities of the UniLM seq2seq posts (kexue.fm/archives/6933, /7809); beam search and
    nucleus sampling as in Holtzman et al. (arXiv:1904.09751).
    """
    fn = "generate"
    input_ids, eos = _check(fn, model_or_fn, input_ids, max_new_tokens, eos_token_id, pad_token_id,
                            num_beams, top_k, top_p, temperature, length_penalty, logits_processor, generator)
    if not isinstance(do_sample, bool):
        fail(fn, "do_sample", "a bool", do_sample, exc=TypeError)
    if do_sample and num_beams > 1:
        fail(fn, "num_beams", "1 when do_sample=True (beam sampling is not offered)", num_beams)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    input_ids = input_ids.long()
    stepper = _Stepper(model_or_fn, input_ids, model_kwargs, fn)
    if max_new_tokens == 0:
        return input_ids.clone()
    if num_beams == 1:
        return _greedy_or_sample(stepper, input_ids, max_new_tokens, eos, pad, do_sample, top_k, top_p,
                                 float(temperature), logits_processor, generator)
    return _beam(stepper, input_ids, max_new_tokens, eos, pad, num_beams, float(length_penalty),
                 logits_processor)


def _greedy_or_sample(
    stepper: _Stepper,
    ids: Tensor,
    max_new: int,
    eos: list[int],
    pad: int,
    do_sample: bool,
    top_k: int | None,
    top_p: float | None,
    temperature: float,
    processor: LogitsProcessor | None,
    generator: torch.Generator | None,
) -> Tensor:
    b = ids.shape[0]
    alive = torch.ones(b, dtype=torch.bool, device=ids.device)
    for step in range(max_new):
        scores = stepper.logits(ids, first=step == 0).float()
        if processor is not None:
            scores = processor(ids, scores)
        if do_sample:
            probs = _warp(scores, temperature, top_k, top_p).softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = torch.where(alive, nxt, torch.full_like(nxt, pad))
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        stepper.append(nxt[:, None])
        alive = alive & ~_is_eos(nxt, eos)
        if not bool(alive.any()):
            break
    return ids


def _beam(
    stepper: _Stepper,
    prompt: Tensor,
    max_new: int,
    eos: list[int],
    pad: int,
    k: int,
    length_penalty: float,
    processor: LogitsProcessor | None,
) -> Tensor:
    b, t0 = prompt.shape
    dev = prompt.device
    neg_inf = float("-inf")
    ids = prompt.repeat_interleave(k, dim=0)  # [B*K, T0]
    stepper.expand(k)
    beam_scores = torch.full((b, k), neg_inf, device=dev)
    beam_scores[:, 0] = 0.0  # all beams start equal: keep one so the first step picks distinct tokens
    # finished hypotheses: K per row, scores normalised by length
    bank = torch.full((b, k, t0 + max_new), pad, dtype=torch.long, device=dev)
    bank_scores = torch.full((b, k), neg_inf, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    offsets = (torch.arange(b, device=dev) * k)[:, None]
    n_cand = max(2, 1 + len(eos)) * k
    for step in range(max_new):
        logits = stepper.logits(ids, first=step == 0).float()
        logp = torch.log_softmax(logits, dim=-1)
        if processor is not None:
            logp = processor(ids, logp)
        v = logp.shape[-1]
        cand = (beam_scores.view(-1, 1) + logp).view(b, k * v)
        top_scores, top_idx = torch.topk(cand, min(n_cand, k * v), dim=1)  # sorted, best first
        src_beam, token = top_idx // v, top_idx % v
        cur_len = step + 1
        is_eos = _is_eos(token, eos) & torch.isfinite(top_scores)
        # candidates ending here (among the first K ranks, as in the classic beam search) enter the bank
        rank = torch.arange(top_scores.shape[1], device=dev)[None]
        enter = is_eos & (rank < k) & ~done[:, None]
        if bool(enter.any()):
            new_scores = torch.where(enter, top_scores / (cur_len**length_penalty), neg_inf)
            src_rows = (offsets + src_beam).view(-1)
            new_seqs = torch.cat([ids.index_select(0, src_rows), token.view(-1, 1)], dim=1)
            new_seqs = torch.nn.functional.pad(new_seqs, (0, t0 + max_new - new_seqs.shape[1]), value=pad)
            all_scores = torch.cat([bank_scores, new_scores], dim=1)
            all_seqs = torch.cat([bank, new_seqs.view(b, -1, t0 + max_new)], dim=1)
            bank_scores, keep = torch.topk(all_scores, k, dim=1)
            bank = all_seqs.gather(1, keep[:, :, None].expand(-1, -1, all_seqs.shape[-1]))
        # the K best candidates that did not end continue
        live_scores = top_scores.masked_fill(is_eos, neg_inf)
        live_scores, pick = torch.topk(live_scores, k, dim=1)
        beam_idx = (offsets + src_beam.gather(1, pick)).view(-1)
        nxt = token.gather(1, pick).view(-1)
        # rows already done keep emitting padding; their beams no longer matter
        nxt = torch.where(done.repeat_interleave(k), torch.full_like(nxt, pad), nxt)
        beam_scores = live_scores
        ids = torch.cat([ids.index_select(0, beam_idx), nxt[:, None]], dim=1)
        stepper.reorder(beam_idx)
        stepper.append(nxt[:, None])
        # a row is done when its bank is full and no running beam can still beat its worst hypothesis
        best_running = beam_scores[:, 0] / (cur_len**length_penalty)
        full = torch.isfinite(bank_scores).all(dim=1)
        done = done | (full & (bank_scores[:, -1] >= best_running)) | ~torch.isfinite(beam_scores[:, 0])
        if bool(done.all()):
            break
    # unfinished rows: the running beams compete with the bank at the length reached
    cur_len = ids.shape[1] - t0
    run_scores = torch.where(done[:, None], neg_inf, beam_scores / (cur_len**length_penalty))
    run_seqs = torch.nn.functional.pad(ids, (0, t0 + max_new - ids.shape[1]), value=pad).view(b, k, -1)
    all_scores = torch.cat([bank_scores, run_scores], dim=1)
    all_seqs = torch.cat([bank, run_seqs], dim=1)
    best = all_scores.argmax(dim=1)
    out = all_seqs[torch.arange(b, device=dev), best]
    # trim the common padding at the end
    lengths = _lengths(out, t0, eos, ids.shape[1])
    return out[:, : int(lengths.max())]


def _lengths(seqs: Tensor, t0: int, eos: list[int], run_len: int) -> Tensor:
    """Length of each row: up to and including its first end token after the prompt, else ``run_len``."""
    gen = seqs[:, t0:run_len]
    ends = _is_eos(gen, eos)
    pos = torch.arange(gen.shape[1], device=seqs.device)[None].expand_as(gen)
    first = torch.where(ends, pos, torch.full_like(pos, gen.shape[1])).amin(dim=1)
    return torch.where(first < gen.shape[1], t0 + first + 1, torch.full_like(first, run_len))


# -------------------------------------------------------------------------------------------- wrappers


def greedy_search(
    model_or_fn: Callable[..., Any],
    input_ids: Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    logits_processor: LogitsProcessor | None = None,
    **model_kwargs: Any,
) -> Tensor:
    """Greedy decoding: :func:`generate` with ``num_beams=1, do_sample=False``."""
    return generate(model_or_fn, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, logits_processor=logits_processor, **model_kwargs)


def beam_search(
    model_or_fn: Callable[..., Any],
    input_ids: Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    length_penalty: float = 1.0,
    logits_processor: LogitsProcessor | None = None,
    **model_kwargs: Any,
) -> Tensor:
    """Batched beam search: :func:`generate` with ``num_beams`` (``num_beams=1`` is greedy)."""
    return generate(model_or_fn, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, num_beams=num_beams, length_penalty=length_penalty,
                    logits_processor=logits_processor, **model_kwargs)


def sample(
    model_or_fn: Callable[..., Any],
    input_ids: Tensor,
    *,
    max_new_tokens: int,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    logits_processor: LogitsProcessor | None = None,
    generator: torch.Generator | None = None,
    **model_kwargs: Any,
) -> Tensor:
    """Top-k / nucleus sampling: :func:`generate` with ``do_sample=True``."""
    return generate(model_or_fn, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, do_sample=True, top_k=top_k, top_p=top_p,
                    temperature=temperature, logits_processor=logits_processor, generator=generator,
                    **model_kwargs)
