"""Flooding: keep the training loss hovering around a flood level ``b`` (post 7643).

``L̃ = |L − b| + b``: ordinary descent while the mini-batch loss is above ``b``, ascent below it. Su's
reading: a descent step followed by an ascent step is, to second order, one gradient-descent step
of size ``ε²/2`` on ``‖∇_θ L‖²`` — once the loss is low, flooding seeks flat regions.

Source: kexue.fm/archives/7643; Ishida et al., "Do We Need Zero Training Loss After Achieving Zero
Training Error?", arXiv:2002.08709.
"""

from __future__ import annotations

from torch import Tensor, nn

from trainwell._validation import check_finite_number, check_scalar_tensor, check_tensor, fail

__all__ = ["Flooding", "flooding"]


def flooding(loss: Tensor, level: float, *, reference: Tensor | float | None = None) -> Tensor:
    """Flooded loss ``|L − b| + b`` of the mini-batch mean loss ``L`` (flood level ``b``).

    Value ``≥ max(L, b)``; gradient ``sign(L − b)·∇L`` (at ``L = b`` exactly the gradient is 0, as for
    ``torch.abs``). Apply it to the *batch mean*: flooding each sample separately is a different
    method (iFlood).

    Granularity: the sign is decided on the loss you pass. Under gradient accumulation or DDP each
    micro-batch/rank would decide on its own, so some could ascend while the effective batch
    descends. Pass ``reference`` — the loss of the full effective batch (e.g. the accumulated mean
    of the micro-batch losses, or ``all_reduce(loss.detach()) / world_size``) — to decide the sign
    from it: the result is then ``sign(reference − b)·(L − b) + b``, whose gradient is
    ``sign(reference − b)·∇L`` on every micro-batch/rank alike.

    Shape:
        loss: a scalar; output: a scalar.

    Source: kexue.fm/archives/7643; arXiv:2002.08709.

    Args:
        loss: scalar (one-element) loss tensor.
        level: flood level ``b`` (finite; the paper searches ``b`` in about {0.00, 0.01, …, 0.10}).
        reference: optional scalar (tensor or float) deciding the sign; detached.
    """
    fn = "flooding"
    check_scalar_tensor("loss", loss, fn=fn)
    b = check_finite_number("level", level, fn=fn)
    if reference is None:
        return (loss - b).abs() + b
    if isinstance(reference, Tensor):
        check_tensor("reference", reference, fn=fn, kind="float")
        if reference.numel() != 1:
            fail(fn, "reference", "a scalar (one-element tensor or float)", reference)
        sign = (reference.detach().reshape(loss.shape).to(loss.dtype) - b).sign()
    else:
        r = check_finite_number("reference", reference, fn=fn)
        sign = loss.new_tensor(float(r > b) - float(r < b))
    return sign * (loss - b) + b


class Flooding(nn.Module):
    """Module form of :func:`flooding`: ``Flooding(level)(loss, reference=None)`` (``level``: attribute).

    Shape:
        loss: a scalar; reference: a scalar tensor or a float; output: a scalar.

    Example::

        flood = Flooding(level=0.05)
        logits, target = torch.randn(8, 3, requires_grad=True), torch.randint(3, (8,))
        loss = flood(F.cross_entropy(logits, target))  # |L − b| + b
        loss.backward()
    """

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = check_finite_number("level", level, fn="Flooding")

    def forward(self, loss: Tensor, reference: Tensor | float | None = None) -> Tensor:
        return flooding(loss, self.level, reference=reference)

    def extra_repr(self) -> str:
        return f"level={self.level}"
