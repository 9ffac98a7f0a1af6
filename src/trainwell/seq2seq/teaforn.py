"""TeaForN: N-step nested teacher forcing against exposure bias.

Split the decoder into its token embedding ``E`` and the rest ``M`` (everything up to the final hidden state,
same width as the embeddings). Pass 1 is ordinary teacher forcing, ``h^{(1)} = M(e_0, e_1, ..., e_{L-1})``;
pass ``i + 1`` feeds the model's own outputs back in place of the gold embeddings,

    h^{(i+1)} = M(e_0, g(h^{(i)}_1), ..., g(h^{(i)}_{L-1})),    L = -Σ_t Σ_i λ_i log p^{(i)}_t[w_t],

with ``g`` the identity (the post's main form) or the top-k probability-weighted embedding mixture
``g(h) = Σ_{w∈Top_k} p[w] e_w / Σ_{w∈Top_k} p[w]``. The weights of ``M`` are shared across passes and
position embeddings are still added at every pass (only the token part is replaced). On a causal ``M``,
``h^{(n)}_t`` depends only on ``w_0..w_{t-n}``: the model learns to predict ``n`` tokens ahead. Inference
uses pass 1 only (the model is not changed).

Source: kexue.fm/archives/7818; Goodman, Ding, Soricut, "TeaForN: Teacher-Forcing with N-grams",
EMNLP 2020 (arXiv:2010.03494).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import check_bool, check_choice, check_int, check_module, check_tensor, fail
from trainwell.seq2seq.unilm import IGNORE, UniLMSeq2Seq, shifted_lm_loss

__all__ = ["TeaForNLoss", "TeaForNOutput"]


@dataclass
class TeaForNOutput:
    """Result of :class:`TeaForNLoss`.

    Attributes:
        loss: ``Σ_i λ_i L_i`` (what to back-propagate).
        losses: the per-pass losses ``L_1..L_N`` (``L_1`` is plain teacher forcing).
        logits: pass-1 logits ``[B, T, V]``.
        hidden_states: final hidden state of every pass, each ``[B, T, d]`` (output at position ``p`` is
            the post's ``h_{p+1}``).
    """

    loss: Tensor
    losses: list[Tensor]
    logits: Tensor
    hidden_states: list[Tensor]


class TeaForNLoss(nn.Module):
    """N-step nested teacher-forcing loss for any decoder that accepts ``inputs_embeds``.

    The decoder must take ``inputs_embeds=`` (plus ``attention_mask``/``token_type_ids`` when given) and
    ``output_hidden_states=True`` and return ``.logits`` and ``.hidden_states`` (last = the final hidden
    state fed back); its token embedding comes from ``get_input_embeddings()``. Hugging Face causal LMs and
    :class:`~trainwell.seq2seq.UniLMSeq2Seq` qualify. For UniLM models only target positions (segment 1) get
    the fed-back states; source positions keep their embeddings. For causal LMs every position after the
    first is replaced.

    Args:
        model: the decoder (its parameters are the only parameters; nothing is added).
        n_steps: ``N`` ≥ 1 (``N = 1`` is teacher forcing).
        weights: ``λ_1..λ_N`` (default ``1/N`` each).
        feedback: ``"identity"`` (default) or ``"topk"`` (probability-weighted embedding mixture).
        topk: ``k`` of the mixture (default: the whole vocabulary, i.e. ``softmax(W h + b) @ E``).
        detach: stop gradients through the fed-back states (default False: gradients flow across passes).

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)`` returns a
    :class:`TeaForNOutput`; ``labels`` follow the Hugging Face convention (aligned, ``-100`` ignored; default:
    target tokens for UniLM models, all non-pad tokens for causal LMs).
    """

    def __init__(
        self,
        model: nn.Module,
        n_steps: int = 2,
        weights: Sequence[float] | None = None,
        feedback: str = "identity",
        topk: int | None = None,
        detach: bool = False,
    ) -> None:
        super().__init__()
        fn = "TeaForNLoss"
        check_module("model", model, fn=fn)
        self.n_steps = int(check_int("n_steps", n_steps, fn=fn, min=1) or 1)
        if weights is None:
            w = [1.0 / self.n_steps] * self.n_steps
        else:
            w = [float(x) for x in weights]
            if len(w) != self.n_steps:
                fail(fn, "weights", f"a sequence of n_steps={self.n_steps} numbers", weights)
            if any(x < 0 for x in w):
                fail(fn, "weights", "non-negative numbers", weights)
        self.weights = w
        self.feedback = check_choice("feedback", feedback, ("identity", "topk"), fn=fn)
        self.topk = check_int("topk", topk, fn=fn, min=1, allow_none=True)
        self.detach = check_bool("detach", detach, fn=fn)
        if not hasattr(model, "get_input_embeddings"):
            fail(fn, "model", "a model with get_input_embeddings()", model, exc=TypeError)
        self.model = model
        self.unilm = isinstance(model, UniLMSeq2Seq)

    def _embedding_matrix(self) -> Tensor:
        emb = self.model.get_input_embeddings()  # type: ignore[operator]
        return emb.weight  # type: ignore[no-any-return]

    def mix(self, logits: Tensor) -> Tensor:
        """``g`` of the top-k feedback: ``Σ_{Top_k} p[w] e_w / Σ_{Top_k} p[w]`` from logits ``[..., V]``."""
        e = self._embedding_matrix()
        p = torch.softmax(logits.float(), dim=-1)
        k = self.topk
        if k is not None and k < p.shape[-1]:
            vals, idx = torch.topk(p, k, dim=-1)
            w = vals / vals.sum(-1, keepdim=True)
            return torch.einsum("...k,...kd->...d", w, e[idx].float()).to(e.dtype)
        return (p @ e.float()).to(e.dtype)

    def _run(self, embeds: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> Any:
        kw: dict[str, Any] = {"inputs_embeds": embeds, "output_hidden_states": True}
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = self.model(**kw)
        hs = getattr(out, "hidden_states", None)
        if not hs:
            raise TypeError("TeaForNLoss: the model returned no hidden_states for output_hidden_states=True")
        return out.logits, hs[-1]

    def passes(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Logits and final hidden states of the ``N`` passes (``inputs_embeds``: the gold embeddings)."""
        fn = "TeaForNLoss"
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{fn}(): give exactly one of 'input_ids' and 'inputs_embeds'")
        if input_ids is not None:
            check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
            gold = self.model.get_input_embeddings()(input_ids)  # type: ignore[operator]
        else:
            check_tensor("inputs_embeds", inputs_embeds, fn=fn, kind="float", ndim=3)
            gold = inputs_embeds
        b, t = gold.shape[:2]
        if self.unilm:
            if token_type_ids is None:
                raise ValueError(f"{fn}(): 'token_type_ids' is required for a UniLMSeq2Seq model")
            replace = token_type_ids.long() == 1
        else:
            replace = torch.ones(b, t, dtype=torch.bool, device=gold.device)
            replace[:, 0] = False
        replace = replace[..., None]
        logits_all, hidden_all = [], []
        embeds = gold
        for i in range(self.n_steps):
            logits, h = self._run(embeds, attention_mask, token_type_ids)
            logits_all.append(logits)
            hidden_all.append(h)
            if i + 1 == self.n_steps:
                break
            fb = h if self.feedback == "identity" else self.mix(logits)
            if fb.shape[-1] != gold.shape[-1]:
                fail(fn, "model", f"final hidden states of the embedding width {gold.shape[-1]}", fb)
            if self.detach:
                fb = fb.detach()
            # the state at position p-1 predicts token p: it is fed in at position p
            shifted = torch.cat([gold[:, :1], fb[:, :-1].to(gold.dtype)], dim=1)
            embeds = torch.where(replace, shifted, gold)
        return logits_all, hidden_all

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> TeaForNOutput:
        """Total loss ``Σ λ_i L_i``, the per-pass losses, pass-1 logits and every pass's hidden states."""
        fn = "TeaForNLoss"
        check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
        if labels is None:
            if self.unilm:
                if token_type_ids is None:
                    raise ValueError(f"{fn}(): 'token_type_ids' is required for a UniLMSeq2Seq model")
                keep = token_type_ids.long() == 1
            else:
                keep = torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is not None:
                keep = keep & (attention_mask != 0)
            labels = torch.where(keep, input_ids.long(), torch.full_like(input_ids.long(), IGNORE))
        logits_all, hidden_all = self.passes(input_ids, attention_mask, token_type_ids)
        losses = [shifted_lm_loss(lg, labels) for lg in logits_all]
        total = sum(
            (w * loss for w, loss in zip(self.weights, losses)), torch.zeros((), device=losses[0].device)
        )
        return TeaForNOutput(loss=total, losses=losses, logits=logits_all[0], hidden_states=hidden_all)
