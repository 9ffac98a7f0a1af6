"""BERT-of-Theseus: compress a fine-tuned model by progressive module replacement.

A predecessor with ``n_p`` blocks is split into ``n_s`` modules of ``r = n_p / n_s`` consecutive blocks;
module ``i`` (blocks ``[r·i, r·(i+1))``) pairs with successor block ``i``. In every training forward
each module independently uses its successor block with probability ``p`` (the replacement rate)::

    ε_i ~ Bernoulli(p),   x_{i+1} = ε_i · F_s^{(i)}(x_i) + (1 − ε_i) · F_p^{(i)}(x_i)

Only the chosen branch is computed (the layer sequence is built per forward). The predecessor and
everything outside the successor (embeddings, classifier head) are frozen, so the task loss alone
teaches the successor blocks to stand in for their groups; no distillation losses need tuning.
Evaluation runs the successor blocks only. After the replacement phase, fine-tune the successor alone
(``p = 1``, or :func:`export_successor` and fine-tune the plain small model).

Source: kexue.fm/archives/7575; Xu et al., "BERT-of-Theseus: Compressing BERT by Progressive Module
Replacing", EMNLP 2020 (arXiv:2002.02925).

Reported (post, CLUE iflytek accuracy; BERT-base 12 layers):

==============================  ========
model                           accuracy
==============================  ========
fine-tuned 12 layers (teacher)  60.11%
first 6 layers fine-tuned       58.99%
first 3 layers fine-tuned       57.96%
Theseus, 6 layers               59.61%
Theseus, 3 layers               59.36%
==============================  ========

With a successor as large as the predecessor, Theseus did not beat the predecessor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import check_callable, check_choice, check_int, check_module, check_number, fail

__all__ = [
    "ConstantReplacement",
    "LinearReplacement",
    "ReplacementScheduler",
    "TheseusModuleList",
    "TheseusSwitch",
    "compress",
    "export_successor",
]


class ReplacementScheduler:
    """Base of the replacement-rate schedules: ``p`` at optimizer step ``t``; call :meth:`step` per step."""

    def __init__(self) -> None:
        self.t = 0

    def value(self, t: int) -> float:
        """The replacement rate at step ``t`` (probability of using a successor block)."""
        raise NotImplementedError

    @property
    def p(self) -> float:
        """The current replacement rate."""
        return self.value(self.t)

    def step(self) -> None:
        """Advance one optimizer step."""
        self.t += 1

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])


class ConstantReplacement(ReplacementScheduler):
    """Constant replacement rate ``p``, optionally switching to 1 after ``switch_to_one_after`` steps.

    The post found ``p = 0.5`` works without tuning. The official code's constant mode switches to
    ``p = 1`` (successor only) after ``steps_for_replacing`` steps (its example: 2500).
    ``p = 0`` (predecessor only) is allowed; it is useful for checks, not for training.

    Args:
        p: replacement rate in [0, 1] (default 0.5).
        switch_to_one_after: step from which ``p`` is 1 (``None``: never).
    """

    def __init__(self, p: float = 0.5, switch_to_one_after: int | None = None) -> None:
        super().__init__()
        fn = "ConstantReplacement"
        self.rate = check_number("p", p, fn=fn, min=0.0, max=1.0)
        self.switch_to_one_after = check_int("switch_to_one_after", switch_to_one_after, fn=fn, min=0,
                                             allow_none=True)

    def value(self, t: int) -> float:
        if self.switch_to_one_after is not None and t >= self.switch_to_one_after:
            return 1.0
        assert self.rate is not None
        return self.rate

    def __repr__(self) -> str:
        return f"ConstantReplacement(p={self.rate}, switch_to_one_after={self.switch_to_one_after})"


class LinearReplacement(ReplacementScheduler):
    """Linear curriculum ``p_t = min(1, base + k·t)`` (official example: base 0.3, k 6e-4 per step).

    Args:
        base: rate at step 0, in [0, 1] (default 0.3).
        k: increase per optimizer step, >= 0 (default 6e-4; reaches 1 at t = 1167).
    """

    def __init__(self, base: float = 0.3, k: float = 6e-4) -> None:
        super().__init__()
        fn = "LinearReplacement"
        self.base = check_number("base", base, fn=fn, min=0.0, max=1.0)
        self.k = check_number("k", k, fn=fn, min=0.0)

    def value(self, t: int) -> float:
        assert self.base is not None and self.k is not None
        return min(1.0, self.base + self.k * t)

    def __repr__(self) -> str:
        return f"LinearReplacement(base={self.base}, k={self.k})"


def _default_call(block: nn.Module, hidden: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Run ``block`` and return its hidden state (first element of a tuple/list/ModelOutput output)."""
    out = block(hidden, *args, **kwargs)
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple"):
        first = out[0]
        if isinstance(first, Tensor):
            return first
    raise TypeError(
        f"TheseusModuleList: block {type(block).__name__} returned {type(out).__name__}; pass "
        "call=lambda block, hidden, *a, **kw: ... that returns the hidden-state tensor"
    )


class _Tethered:
    """Calls ``block`` and adds ``0 · (a successor parameter)`` to its hidden state (value unchanged)."""

    def __init__(self, block: nn.Module, successor: nn.ModuleList) -> None:
        self.block, self.successor = block, successor

    def __call__(self, hidden: Any, *args: Any, **kwargs: Any) -> Any:
        out = self.block(hidden, *args, **kwargs)
        param = next((p for p in self.successor.parameters() if p.requires_grad), None)
        if param is None:
            return out
        zero = param.reshape(-1)[0] * 0.0
        if isinstance(out, Tensor):
            return out + zero.to(out.dtype)
        if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            return (out[0] + zero.to(out[0].dtype), *out[1:])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.block, name)


class TheseusModuleList(nn.Module):
    """A drop-in for an encoder's block list that swaps predecessor modules for successor blocks.

    Iterating it (as an encoder's ``for layer in self.layer`` does) yields the blocks of one forward
    pass: in training mode, for each module ``i`` it draws ``ε_i ~ Bernoulli(p)`` once and yields
    successor block ``i`` if ``ε_i = 1``, else predecessor blocks ``r·i … r·i + r − 1``; in eval mode it
    yields the successor blocks only. Unchosen blocks are never run. Calling it directly,
    ``theseus(hidden, *args, **kwargs)``, runs the same chain through ``call``.

    The predecessor is frozen (``requires_grad_(False)``); train :meth:`successor_parameters`.

    Args:
        predecessor: ``nn.ModuleList`` of ``n_p`` blocks (e.g. ``model.bert.encoder.layer``).
        successor: ``nn.ModuleList`` of ``n_s`` blocks, ``n_p % n_s == 0``.
        scheduler: a :class:`ReplacementScheduler` (e.g. ``ConstantReplacement(0.5)``); call its
            ``step()`` after every optimizer step.
        call: ``call(block, hidden, *args, **kwargs) -> hidden`` used by :meth:`forward` (default: call
            the block and take the first element of a tuple output).

    Attributes:
        last_selection: the ``ε_i`` of the latest iteration (``True`` = successor), ``None`` before.

    Shape:
        forward: ``hidden`` as the blocks take it (e.g. ``[B, T, d]``), output the same.
    """

    def __init__(
        self,
        predecessor: nn.ModuleList,
        successor: nn.ModuleList,
        scheduler: ReplacementScheduler,
        call: Callable[..., Tensor] | None = None,
    ) -> None:
        super().__init__()
        fn = "TheseusModuleList"
        check_module("predecessor", predecessor, fn=fn, cls=nn.ModuleList)
        check_module("successor", successor, fn=fn, cls=nn.ModuleList)
        check_module("scheduler", scheduler, fn=fn, cls=ReplacementScheduler)
        check_callable("call", call, fn=fn, allow_none=True)
        n_p, n_s = len(predecessor), len(successor)
        if n_s == 0:
            fail(fn, "successor", "a non-empty nn.ModuleList", successor)
        if n_p % n_s != 0:
            raise ValueError(
                f"{fn}(): the predecessor's block count must be divisible by the successor's, got "
                f"n_p={n_p} and n_s={n_s} (n_p % n_s = {n_p % n_s})"
            )
        self.predecessor = predecessor
        self.successor = successor
        self.scheduler = scheduler
        self.call: Callable[..., Tensor] = call if call is not None else _default_call
        self.ratio = n_p // n_s
        self.last_selection: list[bool] | None = None
        self._linked: list[TheseusSwitch] = []
        predecessor.requires_grad_(False)

    def groups(self) -> list[list[int]]:
        """Predecessor block indices of each module: ``[[0..r-1], [r..2r-1], ...]``."""
        r = self.ratio
        return [list(range(r * i, r * (i + 1))) for i in range(len(self.successor))]

    def sample(self) -> list[bool]:
        """Draw ``ε_i ~ Bernoulli(p)`` for every module (torch's global RNG; eval mode: all True)."""
        n = len(self.successor)
        if not self.training:
            return [True] * n
        p = self.scheduler.p
        if p >= 1.0:
            return [True] * n
        if p <= 0.0:
            return [False] * n
        return (torch.rand(n) < p).tolist()

    def blocks_for(self, selection: list[bool]) -> list[nn.Module]:
        """The block sequence of a forward pass with the given module choices."""
        out: list[nn.Module] = []
        for i, (use_successor, group) in enumerate(zip(selection, self.groups())):
            out.extend([self.successor[i]] if use_successor else [self.predecessor[j] for j in group])
        return out

    def __iter__(self) -> Iterator[Any]:
        self.last_selection = self.sample()
        blocks: list[Any] = self.blocks_for(self.last_selection)
        if self.training and torch.is_grad_enabled() and not any(self.last_selection) and blocks:
            # Every module chose its frozen predecessor: the loss would not require grad and
            # ``backward()`` would fail. Tie the output to the successor by an exact ``+ 0``.
            blocks[-1] = _Tethered(blocks[-1], self.successor)
        return iter(blocks)

    def __len__(self) -> int:
        # the number of blocks the exported model has (training forwards may run more)
        return len(self.successor)

    def __getitem__(self, idx: int) -> nn.Module:
        """Successor block ``idx`` (indexing follows the exported model, like ``len``)."""
        return self.successor[idx]  # type: ignore[no-any-return]

    def forward(self, hidden: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        for block in self:
            hidden = self.call(block, hidden, *args, **kwargs)
        return hidden

    def successor_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters to train: the successor blocks (and successor embeddings linked by :func:`compress`)."""
        yield from self.successor.parameters()
        for switch in self._linked:
            yield from switch.successor.parameters()

    def extra_repr(self) -> str:
        return f"n_p={len(self.predecessor)}, n_s={len(self.successor)}, ratio={self.ratio}, " \
               f"scheduler={self.scheduler!r}"


class TheseusSwitch(nn.Module):
    """One replaceable module pair (e.g. the embedding layer): successor with probability ``p``.

    Training: draws ``ε ~ Bernoulli(p)`` per forward and runs only the chosen module; eval: the
    successor. The predecessor is frozen. Built by :func:`compress` with ``replace_embeddings``.
    """

    def __init__(self, predecessor: nn.Module, successor: nn.Module, scheduler: ReplacementScheduler) -> None:
        super().__init__()
        fn = "TheseusSwitch"
        check_module("predecessor", predecessor, fn=fn)
        check_module("successor", successor, fn=fn)
        check_module("scheduler", scheduler, fn=fn, cls=ReplacementScheduler)
        self.predecessor = predecessor
        self.successor = successor
        self.scheduler = scheduler
        self.last_selection: bool | None = None
        predecessor.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        p = self.scheduler.p
        use = (not self.training) or p >= 1.0 or (p > 0.0 and bool(torch.rand(()) < p))
        self.last_selection = use
        return (self.successor if use else self.predecessor)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # HF code reads attributes of the embedding module (e.g. word_embeddings): use the successor's
            return getattr(super().__getattr__("successor"), name)


def _parent_and_name(model: nn.Module, path: str, fn: str, arg: str) -> tuple[nn.Module, str, nn.Module]:
    if not isinstance(path, str) or not path:
        fail(fn, arg, "a non-empty dotted module path such as 'bert.encoder.layer'", path, exc=TypeError)
    try:
        target = model.get_submodule(path)
    except AttributeError as err:
        raise ValueError(
            f"{fn}(): argument '{arg}' names no submodule of {type(model).__name__}: {err}"
        ) from None
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, name, target


def compress(
    model: nn.Module,
    layers: str = "bert.encoder.layer",
    n_successor: int = 6,
    init: str = "first",
    replace_embeddings: bool | str = False,
    *,
    scheduler: ReplacementScheduler | None = None,
    call: Callable[..., Tensor] | None = None,
) -> TheseusModuleList:
    """Turn ``model`` into a Theseus training model in place and return its :class:`TheseusModuleList`.

    Every parameter of ``model`` is frozen except the successor's: the predecessor blocks, the
    (shared) embeddings and the classifier head keep their fine-tuned values, as in the method.

    Args:
        model: the fine-tuned predecessor (any ``nn.Module``; Hugging Face models included).
        layers: dotted path of the block list, resolved with ``model.get_submodule`` (default
            ``"bert.encoder.layer"``); it must be an ``nn.ModuleList``.
        n_successor: successor block count ``n_s`` (must divide the block count; default 6).
        init: ``"first"`` (default, official code): successor block ``i`` is a copy of predecessor
            block ``i``; ``"every_kth"``: a copy of block ``r·i``, the first block of module ``i``.
        replace_embeddings: ``False`` (default, official code): the frozen embeddings are shared.
            ``True`` or a dotted path: the embedding module (``True``: ``model.base_model.embeddings``)
            becomes a replaceable module with its own trainable successor copy (author's Keras code).
        scheduler: replacement-rate schedule (default ``ConstantReplacement(0.5)``).
        call: forwarded to :class:`TheseusModuleList`.

    Returns:
        The wrapper now installed at ``layers``; optimize ``wrapper.successor_parameters()`` and call
        ``wrapper.scheduler.step()`` after each optimizer step.
    """
    fn = "compress"
    check_module("model", model, fn=fn)
    check_int("n_successor", n_successor, fn=fn, min=1)
    check_choice("init", init, ("first", "every_kth"), fn=fn)
    if not isinstance(replace_embeddings, (bool, str)):
        fail(fn, "replace_embeddings", "a bool or a dotted module path", replace_embeddings, exc=TypeError)
    if scheduler is None:
        scheduler = ConstantReplacement(0.5)
    check_module("scheduler", scheduler, fn=fn, cls=ReplacementScheduler)
    parent, name, found = _parent_and_name(model, layers, fn, "layers")
    if isinstance(found, TheseusModuleList):
        fail(fn, "layers", "a block list that is not already compressed", found)
    predecessor: nn.ModuleList = check_module("layers", found, fn=fn, cls=nn.ModuleList)
    n_p = len(predecessor)
    if n_p % n_successor != 0:
        raise ValueError(
            f"{fn}(): argument 'n_successor' must divide the {n_p} blocks at '{layers}', got {n_successor}"
        )
    r = n_p // n_successor
    picks = range(n_successor) if init == "first" else range(0, n_p, r)
    successor = nn.ModuleList([copy.deepcopy(predecessor[j]) for j in picks])
    model.requires_grad_(False)
    successor.requires_grad_(True)
    wrapper = TheseusModuleList(predecessor, successor, scheduler, call=call)
    setattr(parent, name, wrapper)
    if replace_embeddings is not False:
        if replace_embeddings is True:
            base = getattr(model, "base_model", model)
            emb = getattr(base, "embeddings", None)
            if not isinstance(emb, nn.Module):
                fail(
                    fn,
                    "replace_embeddings",
                    "a dotted module path (the model has no base_model.embeddings)",
                    replace_embeddings,
                )
            path = next(n for n, m in model.named_modules() if m is emb)
        else:
            path = replace_embeddings
        e_parent, e_name, e_module = _parent_and_name(model, path, fn, "replace_embeddings")
        e_successor = copy.deepcopy(e_module).requires_grad_(True)
        switch = TheseusSwitch(e_module, e_successor, scheduler)
        setattr(e_parent, e_name, switch)
        wrapper._linked.append(switch)
    return wrapper


def export_successor(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with only the successor: what Theseus compressed it to.

    Every :class:`TheseusModuleList` becomes an ``nn.ModuleList`` of its successor blocks and every
    :class:`TheseusSwitch` its successor module; all parameters are trainable again. For a Hugging
    Face model, ``config.num_hidden_layers`` is set to the successor size, so the result round-trips
    through ``save_pretrained`` / ``from_pretrained``. ``model`` itself is left unchanged.
    """
    fn = "export_successor"
    check_module("model", model, fn=fn)
    out = copy.deepcopy(model)
    found = [(n, m) for n, m in out.named_modules() if isinstance(m, (TheseusModuleList, TheseusSwitch))]
    lists = [m for _, m in found if isinstance(m, TheseusModuleList)]
    if not lists:
        fail(fn, "model", "a model compressed with compress() (no TheseusModuleList inside)", model)
    for name, module in found:
        parent_path, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_path) if parent_path else out
        replacement = nn.ModuleList(list(module.successor)) if isinstance(module, TheseusModuleList) \
            else module.successor
        setattr(parent, attr, replacement)
    out.requires_grad_(True)
    config = getattr(out, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers") and len(lists) == 1:
        config.num_hidden_layers = len(lists[0].successor)
    return out

