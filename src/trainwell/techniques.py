"""The technique registry: every trainwell technique as a ``make_step`` factory with documented defaults.

A :class:`Technique` turns ``(model, loss_fn, optimizer)`` into ``step(batch) -> Tensor``: the step runs
the forward pass(es), fills ``.grad`` and returns the detached task loss (the regularizers'
``step(closure)`` contract). The caller zeroes the gradients before and calls ``optimizer.step()`` after::

    from trainwell.techniques import get_technique

    tech = get_technique("fgm:epsilon=0.5")
    step = tech.build(model, loss_fn, optimizer)
    for batch in loader:
        optimizer.zero_grad()
        loss = step(batch)
        optimizer.step()

``loss_fn(model, batch) -> Tensor`` is the task loss. Techniques that *replace* the loss (ZLPR, logit
adjustment, focal, class-balanced, Taylor CE, AM-Softmax, R-Drop, VAT's supervised part) need the logits
and targets instead: they read the batch as ``(inputs..., target)`` (a tuple or list; the model is called
as ``model(*inputs)``) or as a dict with ``"labels"`` (the model is called as ``model(**rest)`` and its
``.logits`` are used). Adversarial techniques perturb the module ``embedding`` names (default
``model.get_input_embeddings()``).

Unlabelled batches: ``vat`` and ``rdrop`` also take a batch whose target is ``None`` (``(x, None)`` or a dict
with ``"labels": None``) and then apply their consistency term alone (``α·LDS`` for VAT, ``α·½(KL¹² + KL²¹)``
for R-Drop) and return it: the semi-supervised use of posts 7466 and 8496, where a labelled step and an
unlabelled step fill ``.grad`` one after the other before ``optimizer.step()``.

Specs: ``"name"``, ``"name:key=value"``, several keys ``"name:k1=v1:k2=v2"``, and a grid
``"fgm:epsilon=0.3,1.0"`` (:func:`expand_techniques` gives one technique per combination). Values are
parsed as bool (``true``/``false``), int, float, ``none``, else kept as text; they are never evaluated.

Source: the posts named in each technique's ``source`` (kexue.fm/archives/<id>).
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._ops import logits_of as _logits_of
from trainwell._validation import check_callable, fail

__all__ = [
    "Technique",
    "expand_techniques",
    "get_technique",
    "list_techniques",
    "parse_technique_spec",
    "register_technique",
]

StepFn = Callable[[Any], Tensor]
LossFn = Callable[[nn.Module, Any], Tensor]
OptimizerFactory = Callable[[nn.Module, torch.optim.Optimizer], torch.optim.Optimizer]


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if v is None:
        return "none"
    return str(v)


@dataclass(frozen=True)
class Technique:
    """A named training technique: ``make_step(model, loss_fn, optimizer, **params) -> step``.

    Args:
        name: registry name (lower case, e.g. ``"fgm"``).
        make_step: ``make_step(model, loss_fn, optimizer, **params)`` returning ``step(batch) -> Tensor``
            (forward pass(es), ``.grad`` filled, detached loss returned). It may also accept an
            ``embedding`` keyword (the module adversarial techniques perturb).
        params: the keyword values passed to ``make_step`` (``None``: none; the factory's defaults apply).
        family: ``"loss"``, ``"regularizer"``, ``"optimizer"`` or ``None``.
        source: the post / paper it comes from.
        make_optimizer: optional ``make_optimizer(model, optimizer) -> optimizer`` for techniques that
            replace the optimizer (built-in accumulation); it receives the task's optimizer and returns
            the one to use (same learning rate). Keyword only.
        defaults: the documented default parameters (shown by :func:`list_techniques`). Keyword only.
    """

    name: str
    make_step: Callable[..., StepFn]
    params: Mapping[str, Any] | None = None
    family: str | None = None
    source: str | None = None
    make_optimizer: OptimizerFactory | None = field(default=None, kw_only=True)
    defaults: Mapping[str, Any] | None = field(default=None, kw_only=True, compare=False)

    def __post_init__(self) -> None:
        fn = "Technique"
        if not isinstance(self.name, str) or not self.name.strip():
            fail(fn, "name", "a non-empty str", self.name, exc=TypeError)
        if any(c in self.name for c in ":=,"):
            fail(fn, "name", "a name without ':', '=' or ','", self.name)
        check_callable("make_step", self.make_step, fn=fn)
        if self.params is not None and not isinstance(self.params, Mapping):
            fail(fn, "params", "a mapping of keyword -> value or None", self.params, exc=TypeError)
        check_callable("make_optimizer", self.make_optimizer, fn=fn, allow_none=True)
        object.__setattr__(self, "params", dict(self.params or {}))
        if self.defaults is None:  # a user technique: its own params are its defaults
            object.__setattr__(self, "defaults", dict(self.params or {}))

    @property
    def label(self) -> str:
        """``name`` plus the parameters that differ from the defaults: ``"fgm:epsilon=0.3"``."""
        p = dict(self.params or {})
        d = dict(self.defaults or {})
        changed = {k: v for k, v in p.items() if k not in d or d[k] != v}
        if not changed:
            return self.name
        return self.name + "".join(f":{k}={_fmt_value(v)}" for k, v in sorted(changed.items()))

    def with_params(self, **params: Any) -> Technique:
        """A copy with ``params`` updated (unknown keywords raise ``ValueError``)."""
        _check_keys(self, params, fn="Technique.with_params")
        return Technique(self.name, self.make_step, {**dict(self.params or {}), **params}, self.family,
                         self.source, make_optimizer=self.make_optimizer, defaults=self.defaults)

    def _accepts(self, key: str) -> bool:
        try:
            sig = inspect.signature(self.make_step)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            return False
        return key in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    def build_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer to train with: ``make_optimizer(model, optimizer)`` if set, else ``optimizer``."""
        if self.make_optimizer is None:
            return optimizer
        p = dict(self.params or {})
        return self.make_optimizer(model, optimizer, **p) if p else self.make_optimizer(model, optimizer)

    def build(self, model: nn.Module, loss_fn: LossFn | None, optimizer: torch.optim.Optimizer | None,
              *, embedding: Any = None) -> StepFn:
        """``make_step(model, loss_fn, optimizer, **params)``; ``embedding`` is passed when accepted.

        ``loss_fn=None`` means cross-entropy on ``(x, y)`` batches.
        """
        check_callable("loss_fn", loss_fn, fn=f"Technique({self.name!r}).build", allow_none=True)
        kw = dict(self.params or {})
        if embedding is not None and self._accepts("embedding"):
            kw["embedding"] = embedding
        step = self.make_step(model, loss_fn or default_loss, optimizer, **kw)
        check_callable("make_step(...) result", step, fn=f"Technique({self.name!r}).build")
        return step


# ------------------------------------------------------------------------------------ batch helpers


def split_batch(batch: Any, fn: str = "split_batch") -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """``(args, kwargs, target)`` of a ``(inputs..., target)`` tuple/list or a dict with ``"labels"``."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            fail(fn, "batch", "a dict with a 'labels' entry (or a tuple (inputs..., target))", batch)
        return (), {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), {}, batch[-1]
    fail(fn, "batch", "a tuple/list (inputs..., target) or a dict with 'labels'", batch, exc=TypeError)


def logits_of(out: Any) -> Tensor:
    """The logits of a model output: the tensor itself, ``.logits``, or the first element of a tuple."""
    return _logits_of(out, fn="trainwell.techniques")


def forward_logits(model: nn.Module, batch: Any) -> tuple[Tensor, Any]:
    """``(logits, target)`` of one forward pass on ``batch``."""
    args, kwargs, target = split_batch(batch, fn="trainwell.techniques")
    return logits_of(model(*args, **kwargs)), target


def default_loss(model: nn.Module, batch: Any) -> Tensor:
    """Cross-entropy of ``model(*inputs)`` against the batch's last element (or ``batch['labels']``)."""
    if type(batch) in (tuple, list) and len(batch) == 2:  # the common (x, y) case, without the checks
        out = model(batch[0])
        logits = out if isinstance(out, Tensor) else logits_of(out)
        target = batch[1]
    else:
        logits, target = forward_logits(model, batch)
    if logits.dim() == 2:
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def resolve_embedding(model: nn.Module, embedding: Any, fn: str) -> nn.Module:
    """The module to perturb: ``embedding`` (a module or ``callable(model) -> module``) or
    ``model.get_input_embeddings()``."""
    if isinstance(embedding, nn.Module):
        return embedding
    if callable(embedding):
        m = embedding(model)
        if not isinstance(m, nn.Module):
            fail(fn, "embedding", "a callable returning an nn.Module", m, exc=TypeError)
        return m
    if embedding is not None:
        fail(fn, "embedding", "an nn.Module, a callable(model) -> module, or None", embedding, exc=TypeError)
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        m = get()
        if isinstance(m, nn.Module):
            return m
    fail(fn, "embedding", "given (Task(embedding=...)) for a model without get_input_embeddings()", model,
         exc=TypeError)


def _plain_backward(loss: Tensor) -> Tensor:
    loss.backward()
    return loss.detach()


class _RunningCounts:
    """Class counts of the labels seen so far (add-one smoothed): the prior when none is given."""

    def __init__(self, counts: Sequence[float] | Tensor | None) -> None:
        self.fixed = counts is not None
        self.counts: Tensor | None = None if counts is None else torch.as_tensor(counts, dtype=torch.float64)

    def update(self, target: Tensor, num_classes: int) -> Tensor:
        if not self.fixed:
            seen = torch.bincount(target.reshape(-1).clamp_min(0).cpu(), minlength=num_classes).double()
            self.counts = (torch.ones(num_classes, dtype=torch.float64) if self.counts is None
                           else self.counts) + seen[:num_classes]
        assert self.counts is not None
        return self.counts


# ------------------------------------------------------------------------------------ factories


def _baseline(model: nn.Module, loss_fn: LossFn, optimizer: Any) -> StepFn:
    """Plain training: ``loss_fn(model, batch).backward()``."""

    def step(batch: Any) -> Tensor:
        return _plain_backward(loss_fn(model, batch))

    return step


def _flat(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return logits.reshape(-1, logits.shape[-1]), target.reshape(-1)


def _loss_technique(compute: Callable[[Tensor, Any], Tensor]) -> Callable[[nn.Module], StepFn]:
    def make(model: nn.Module) -> StepFn:
        def step(batch: Any) -> Tensor:
            logits, target = forward_logits(model, batch)
            loss = compute(logits, target)
            loss.backward()
            return loss.detach()

        return step

    return make


def _zlpr(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, threshold: float = 0.0) -> StepFn:
    """ZLPR multi-label CE on ``[B, C]`` 0/1 targets (kexue.fm/archives/7359)."""
    from trainwell.losses import multilabel_categorical_crossentropy

    return _loss_technique(lambda lg, y: multilabel_categorical_crossentropy(lg, y.to(lg.dtype),
                                                                             threshold=threshold))(model)


def _logit_adjust(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, tau: float = 1.0,
                  counts: Sequence[float] | None = None) -> StepFn:
    """Logit-adjusted CE with prior ``counts`` (default: running counts of the labels seen so far)."""
    from trainwell.losses import log_prior_from_counts, logit_adjusted_cross_entropy

    running = _RunningCounts(counts)

    def compute(logits: Tensor, target: Tensor) -> Tensor:
        lg, y = _flat(logits, target)
        c = running.update(y, lg.shape[-1])
        return logit_adjusted_cross_entropy(lg, y, log_prior_from_counts(c).to(lg.device), tau=tau)

    return _loss_technique(compute)(model)


def _focal(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, gamma: float = 2.0) -> StepFn:
    """Focal loss ``-(1-p_y)^γ log p_y`` (kexue.fm/archives/4733)."""
    from trainwell.losses import focal_loss

    return _loss_technique(lambda lg, y: focal_loss(*_flat(lg, y), gamma=gamma))(model)


def _class_balanced(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, tau: float = 1.0,
                    beta: float | None = None, counts: Sequence[float] | None = None) -> StepFn:
    """Class-balanced CE, weights ``∝ n_y^{-τ}`` (or Cui et al.'s effective number with ``beta``)."""
    from trainwell.losses import class_balanced_cross_entropy, class_balanced_weights

    running = _RunningCounts(counts)

    def compute(logits: Tensor, target: Tensor) -> Tensor:
        lg, y = _flat(logits, target)
        w = class_balanced_weights(running.update(y, lg.shape[-1]), tau=tau, beta=beta)
        return class_balanced_cross_entropy(lg, y, w.to(lg.device))

    return _loss_technique(compute)(model)


def _taylor_ce(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, order: int = 2) -> StepFn:
    """Taylor-softmax CE of ``order`` (kexue.fm/archives/7833)."""
    from trainwell.losses import taylor_cross_entropy

    return _loss_technique(lambda lg, y: taylor_cross_entropy(*_flat(lg, y), order=order))(model)


def _last_linear(model: nn.Module, fn: str) -> nn.Linear:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        fail(fn, "model", "a model whose classifier head is an nn.Linear", model, exc=TypeError)
    return last


def _am_softmax(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, scale: float = 30.0,
                margin: float = 0.35) -> StepFn:
    """AM-Softmax on the cosine between the last ``nn.Linear``'s input and its weight rows.

    The head's bias is not used in the loss (evaluate with cosine logits for consistency).
    Source: kexue.fm/archives/5743; arXiv 1801.05599.
    """
    from trainwell.losses import am_softmax_loss

    head = _last_linear(model, "techniques.am_softmax")
    captured: list[Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0])

    def step(batch: Any) -> Tensor:
        captured.clear()
        h = head.register_forward_pre_hook(hook)
        try:
            _, target = forward_logits(model, batch)
        finally:
            h.remove()
        feats = captured[-1]
        cos = F.normalize(feats.float(), dim=-1) @ F.normalize(head.weight.float(), dim=-1).t()
        loss = am_softmax_loss(*_flat(cos, target), scale=scale, margin=margin)
        loss.backward()
        return loss.detach()

    return step


def _rdrop(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, alpha: float = 4.0,
           concat: bool = True) -> StepFn:
    """R-Drop: two dropout passes, ``CE¹ + CE² + α·½(KL¹² + KL²¹)``; returns the first pass's CE.

    ``concat=True`` runs both passes as one forward on the doubled batch (tensor inputs only). A batch
    with target ``None`` is unlabelled: ``α·½(KL¹² + KL²¹)`` alone is minimised and returned.
    Source: kexue.fm/archives/8496; arXiv 2106.14448.
    """
    from trainwell.losses import rdrop_loss, symmetric_kl

    def step(batch: Any) -> Tensor:
        args, kwargs, target = split_batch(batch, fn="techniques.rdrop")
        if concat and not kwargs and all(isinstance(a, Tensor) for a in args):
            l1, l2 = logits_of(model(*[torch.cat([a, a]) for a in args])).chunk(2)
        else:
            l1 = logits_of(model(*args, **kwargs))
            l2 = logits_of(model(*args, **kwargs))
        if target is None:  # an unlabelled batch: the consistency term alone
            kl = alpha * symmetric_kl(l1, l2)
            kl.backward()
            return kl.detach()
        loss = rdrop_loss(l1, l2, target, alpha=alpha)
        loss.backward()
        lg, y = _flat(l1.detach(), target)
        return F.cross_entropy(lg.float(), y)

    return step


def _flooding(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, level: float = 0.1) -> StepFn:
    """Flooding ``|L − b| + b`` of the batch loss (kexue.fm/archives/7643; arXiv 2002.08709)."""
    from trainwell.losses import flooding

    def step(batch: Any) -> Tensor:
        loss = loss_fn(model, batch)
        flooding(loss, level).backward()
        return loss.detach()

    return step


def _noise(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, sigma: float = 0.1,
           embedding: Any = None) -> StepFn:
    """Gaussian noise ``N(0, σ²)`` added to the embedding output during the training step."""
    emb = resolve_embedding(model, embedding, "techniques.noise")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        fail("techniques.noise", "sigma", "a finite number >= 0", sigma)

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:
        return out + sigma * torch.randn_like(out)

    def step(batch: Any) -> Tensor:
        h = emb.register_forward_hook(hook)
        try:
            loss = loss_fn(model, batch)
        finally:
            h.remove()
        return _plain_backward(loss)

    return step


def _gp(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, epsilon: float = 1.0, per_sample: bool = False,
        embedding: Any = None) -> StepFn:
    """Exact input-gradient penalty ``L + ε/2·‖∇_e L‖²`` by double backprop (kexue.fm/archives/7234)."""
    from trainwell.regularizers import capture_embedding_output, gradient_penalty

    emb = resolve_embedding(model, embedding, "techniques.gp")

    def step(batch: Any) -> Tensor:
        with capture_embedding_output(emb) as outs:
            loss = loss_fn(model, batch)
        (loss + gradient_penalty(loss, outs[0], epsilon=epsilon, per_sample=per_sample)).backward()
        return loss.detach()

    return step


def _two_pass(build: Callable[[nn.Module], Any]) -> Callable[..., StepFn]:
    def make_step(model: nn.Module, loss_fn: LossFn, optimizer: Any, **kw: Any) -> StepFn:
        reg = build(model, **kw)

        def step(batch: Any) -> Tensor:
            out: Tensor = reg.step(lambda: loss_fn(model, batch))
            return out

        return step

    return make_step


def _fgm(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, epsilon: float = 1.0,
         embedding: Any = None) -> StepFn:
    """FGM on the embedding matrix, ``r = ε·g/‖g‖`` (kexue.fm/archives/7234)."""
    from trainwell.regularizers import FGM

    emb = resolve_embedding(model, embedding, "techniques.fgm")
    return _two_pass(lambda m: FGM(emb, epsilon=epsilon))(model, loss_fn, optimizer)


def _pgd(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, epsilon: float = 1.0, alpha: float = 0.3,
         steps: int = 3, embedding: Any = None) -> StepFn:
    """PGD: ``steps`` projected ascent steps of size ``alpha`` in the ε-ball (arXiv 1706.06083)."""
    from trainwell.regularizers import PGD

    emb = resolve_embedding(model, embedding, "techniques.pgd")
    return _two_pass(lambda m: PGD(emb, epsilon=epsilon, alpha=alpha, steps=steps))(model, loss_fn, optimizer)


def _fast_gp(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, epsilon: float = 1.0,
             per_sample: bool = False, embedding: Any = None) -> StepFn:
    """The input-gradient penalty by a finite difference (two passes, kexue.fm/archives/7234)."""
    from trainwell.regularizers import FastGradientPenalty

    emb = resolve_embedding(model, embedding, "techniques.fast_gp")
    return _two_pass(lambda m: FastGradientPenalty(emb, epsilon=epsilon, per_sample=per_sample))(
        model, loss_fn, optimizer)


def _parameter_gp(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, beta: float = 1.0,
                  xi: float = 1e-3) -> StepFn:
    """Parameter-gradient penalty ``L + β/2·‖∇_θ L‖²`` by a finite difference (kexue.fm/archives/7643)."""
    from trainwell.regularizers import ParameterGradientPenalty

    params = [p for p in model.parameters() if p.requires_grad]
    return _two_pass(lambda m: ParameterGradientPenalty(params, beta=beta, xi=xi))(model, loss_fn, optimizer)


def _vat(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, epsilon: float = 1.0, xi: float = 1e-6,
         alpha: float = 1.0, power_iterations: int = 1, embedding: Any = None) -> StepFn:
    """VAT: CE + α·KL(p(x) ‖ p(x + r_adv)) on a labelled batch (kexue.fm/archives/7466).

    A batch with target ``None`` is unlabelled: ``α·KL`` alone is minimised and returned (the
    semi-supervised use).
    """
    from trainwell.regularizers import VAT

    emb = resolve_embedding(model, embedding, "techniques.vat")
    vat = VAT(emb, epsilon=epsilon, xi=xi, alpha=alpha, power_iterations=power_iterations)

    def step(batch: Any) -> Tensor:
        last: list[Tensor] = []
        args, kwargs, target = split_batch(batch, fn="techniques.vat")
        if target is None:  # an unlabelled batch: the virtual adversarial term alone
            return vat.step(lambda: logits_of(model(*args, **kwargs)))

        def closure() -> tuple[Tensor | None, Tensor]:
            logits = logits_of(model(*args, **kwargs))
            if not last:  # the clean pass: the supervised loss; later passes only need logits
                lg, y = _flat(logits, target)
                sup = F.cross_entropy(lg.float(), y)
                last.append(sup.detach())
                return sup, logits
            return None, logits

        vat.step(closure)
        return last[0]

    return step


def _weissi(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, lam1: float = 1e-2,
            lam2: float = 1e-4) -> StepFn:
    """CE + WEISSI of the Linear/Conv weights (kexue.fm/archives/7681)."""
    from trainwell.regularizers import weissi_penalty

    def step(batch: Any) -> Tensor:
        loss = loss_fn(model, batch)
        (loss + weissi_penalty(model, lam1, lam2)).backward()
        return loss.detach()

    return step


def _clip_step(model: nn.Module, loss_fn: LossFn, mode: str, max_norm: float) -> StepFn:
    from trainwell.optim import clip_grad_norm_

    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: Any) -> Tensor:
        loss = _plain_backward(loss_fn(model, batch))
        clip_grad_norm_(params, max_norm=max_norm, mode=mode)
        return loss

    return step


def _soft_clip(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, max_norm: float = 1.0) -> StepFn:
    """Backward, then soft clipping: ``g ← g·γ/(‖g‖ + γ)`` with ``γ = max_norm`` (kexue.fm/archives/7469)."""
    return _clip_step(model, loss_fn, "soft", max_norm)


def _hard_clip(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, max_norm: float = 1.0) -> StepFn:
    """Backward, then hard clipping of the global gradient norm to ``max_norm``."""
    return _clip_step(model, loss_fn, "hard", max_norm)


def _accum_step(model: nn.Module, loss_fn: LossFn, optimizer: Any, *, accum_steps: int = 4) -> StepFn:
    """Plain backward; the optimizer (AccumAdamW / AccumSGDM) applies an update every ``accum_steps``."""
    return _baseline(model, loss_fn, optimizer)


def _lr_of(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    g = optimizer.param_groups[0]
    return float(g.get("lr", 1e-3)), float(g.get("weight_decay", 0.0))


def _accum_adamw_opt(model: nn.Module, optimizer: torch.optim.Optimizer, *, accum_steps: int = 4
                     ) -> torch.optim.Optimizer:
    from trainwell.optim import AccumAdamW

    lr, wd = _lr_of(optimizer)
    return AccumAdamW(model.parameters(), lr=lr, weight_decay=wd, accum_steps=accum_steps)


def _accum_sgdm_opt(model: nn.Module, optimizer: torch.optim.Optimizer, *, accum_steps: int = 4
                    ) -> torch.optim.Optimizer:
    from trainwell.optim import AccumSGDM

    lr, wd = _lr_of(optimizer)
    return AccumSGDM(model.parameters(), lr=lr, weight_decay=wd, accum_steps=accum_steps)


def _defaults(f: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(f)
    return {k: p.default for k, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and k not in ("embedding", "counts")}


_REGISTRY: dict[str, Technique] = {}


def register_technique(technique: Technique, *, overwrite: bool = False) -> Technique:
    """Add ``technique`` to the registry (``get_technique(technique.name)`` then finds it)."""
    if not isinstance(technique, Technique):
        fail("register_technique", "technique", "a Technique", technique, exc=TypeError)
    if technique.name in _REGISTRY and not overwrite:
        fail("register_technique", "technique", f"a new name ({technique.name!r} is registered; "
             "pass overwrite=True)", technique.name)
    _REGISTRY[technique.name] = technique
    return technique


def _builtin(name: str, f: Callable[..., StepFn], family: str, source: str,
             make_optimizer: OptimizerFactory | None = None) -> None:
    d = _defaults(f)
    register_technique(Technique(name, f, dict(d), family, source, make_optimizer=make_optimizer, defaults=d))


_builtin("baseline", _baseline, "baseline", "plain training with the task loss")
_builtin("zlpr", _zlpr, "loss", "kexue.fm/archives/7359 (multi-label tasks: [B, C] 0/1 targets)")
_builtin("logit_adjust", _logit_adjust, "loss", "kexue.fm/archives/7615; arXiv 2007.07314")
_builtin("focal", _focal, "loss", "kexue.fm/archives/4733; arXiv 1708.02002")
_builtin("class_balanced", _class_balanced, "loss", "kexue.fm/archives/7708; arXiv 1901.05555")
_builtin("taylor_ce", _taylor_ce, "loss", "kexue.fm/archives/7833; arXiv 2011.07703")
_builtin("am_softmax", _am_softmax, "loss", "kexue.fm/archives/5743; arXiv 1801.05599")
_builtin("rdrop", _rdrop, "loss", "kexue.fm/archives/8496; arXiv 2106.14448")
_builtin("flooding", _flooding, "loss", "kexue.fm/archives/7643; arXiv 2002.08709")
_builtin("noise", _noise, "regularizer", "kexue.fm/archives/7466 (Gaussian noise on the embedding output)")
_builtin("gp", _gp, "regularizer", "kexue.fm/archives/7234 (exact input-gradient penalty)")
_builtin("fast_gp", _fast_gp, "regularizer", "kexue.fm/archives/7234 (finite-difference gradient penalty)")
_builtin("fgm", _fgm, "regularizer", "kexue.fm/archives/7234; arXiv 1412.6572")
_builtin("pgd", _pgd, "regularizer", "kexue.fm/archives/7234; arXiv 1706.06083")
_builtin("vat", _vat, "regularizer", "kexue.fm/archives/7466; arXiv 1704.03976")
_builtin("parameter_gp", _parameter_gp, "regularizer", "kexue.fm/archives/7643 (gradient penalty on θ)")
_builtin("weissi", _weissi, "regularizer", "kexue.fm/archives/7681; arXiv 2008.02965")
_builtin("soft_clip", _soft_clip, "optimizer", "kexue.fm/archives/7469 (soft gradient clipping)")
_builtin("hard_clip", _hard_clip, "optimizer", "kexue.fm/archives/7469 (hard gradient clipping)")
_builtin("accum_adamw", _accum_step, "optimizer", "kexue.fm/archives/7401 (built-in accumulation, AdamW)",
         _accum_adamw_opt)
_builtin("accum_sgdm", _accum_step, "optimizer", "kexue.fm/archives/7401 (built-in accumulation, SGDM)",
         _accum_sgdm_opt)


# ------------------------------------------------------------------------------------ lookup and specs


def list_techniques(pattern: str | None = None) -> list[Technique]:
    """Registered techniques (sorted by name), optionally filtered by a glob ``pattern`` (``"*gp"``)."""
    if pattern is not None and not isinstance(pattern, str):
        fail("list_techniques", "pattern", "a glob str or None", pattern, exc=TypeError)
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [_REGISTRY[n] for n in names]


def _parse_value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _check_keys(tech: Technique, params: Mapping[str, Any], fn: str) -> None:
    allowed = set(tech.defaults or {}) | set(tech.params or {})
    sig_ok = tech._accepts
    defaults = dict(tech.defaults or {})
    for k, v in params.items():
        if k not in allowed and not (k != "embedding" and sig_ok(k)):
            known = ", ".join(sorted(allowed)) or "(none)"
            fail(fn, "technique", f"a known parameter of {tech.name!r} ({known})", k)
        d = defaults.get(k)
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(d, bool) and not isinstance(x, bool):
                fail(fn, f"{tech.name}:{k}", "true or false", x, exc=TypeError)
            if (isinstance(d, (int, float)) and not isinstance(d, bool)
                    and (isinstance(x, bool) or not isinstance(x, (int, float)))):
                fail(fn, f"{tech.name}:{k}", "a number", x, exc=TypeError)
            if isinstance(d, int) and not isinstance(d, bool) and isinstance(x, float):
                fail(fn, f"{tech.name}:{k}", "an int", x, exc=TypeError)


def parse_technique_spec(spec: str) -> tuple[str, dict[str, list[Any]]]:
    """Split ``"name:k=v1,v2:k2=v"`` into ``(name, {k: [v1, v2], k2: [v]})`` (parsed, never evaluated)."""
    fn = "parse_technique_spec"
    if not isinstance(spec, str):
        fail(fn, "spec", "a str like 'fgm:epsilon=0.3,1.0'", spec, exc=TypeError)
    parts = [p.strip() for p in spec.strip().split(":")]
    name = parts[0].lower()
    if not name:
        fail(fn, "spec", "'name' or 'name:key=value[,value...]'", spec)
    grid: dict[str, list[Any]] = {}
    for p in parts[1:]:
        if "=" not in p:
            fail(fn, "spec", f"'key=value' after ':' (in {spec!r})", p)
        k, v = (s.strip() for s in p.split("=", 1))
        if not k.isidentifier() or not v:
            fail(fn, "spec", f"'key=value' with a name and a value (in {spec!r})", p)
        if k in grid:
            fail(fn, "spec", f"each key once (in {spec!r})", k)
        grid[k] = [_parse_value(x) for x in v.split(",")]
    return name, grid


def _lookup(name: str, fn: str) -> Technique:
    if name not in _REGISTRY:
        fail(fn, "technique", "a registered name (" + ", ".join(sorted(_REGISTRY)) + ")", name)
    return _REGISTRY[name]


def get_technique(name: str) -> Technique:
    """The technique ``name`` (``"fgm"``), optionally with parameters (``"fgm:epsilon=0.3"``).

    A grid (several values for one key) raises ``ValueError``: use :func:`expand_techniques`.
    """
    fn = "get_technique"
    if not isinstance(name, str):
        fail(fn, "name", "a str", name, exc=TypeError)
    base, grid = parse_technique_spec(name)
    tech = _lookup(base, fn)
    if any(len(v) != 1 for v in grid.values()):
        fail(fn, "name", "a single setting (use expand_techniques for a grid)", name)
    params = {k: v[0] for k, v in grid.items()}
    _check_keys(tech, params, fn)
    return tech.with_params(**params) if params else tech


def expand_techniques(specs: str | Technique | Iterable[str | Technique]) -> list[Technique]:
    """Techniques of a mix of names, ``name:k=v1,v2`` grids and :class:`Technique` objects, in order.

    Duplicate labels raise ``ValueError`` (each cell of the grid must be named once).
    """
    fn = "expand_techniques"
    items: list[Any] = [specs] if isinstance(specs, (str, Technique)) else list(specs)
    out: list[Technique] = []
    for s in items:
        if isinstance(s, Technique):
            out.append(s)
            continue
        if not isinstance(s, str):
            fail(fn, "techniques", "names, 'name:key=value' strings or Technique objects", s, exc=TypeError)
        base, grid = parse_technique_spec(s)
        tech = _lookup(base, fn)
        _check_keys(tech, grid, fn)
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            out.append(tech.with_params(**dict(zip(keys, combo))) if keys else tech)
    labels = [t.label for t in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        fail(fn, "techniques", "each technique once", ", ".join(dup))
    return out
