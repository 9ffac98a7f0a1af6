"""torch.compile of the optimizers' step matches eager.

Backend ``aot_eager``: it traces through dynamo and AOTAutograd like inductor does, but skips C++ codegen,
which on this 2-core CI machine costs about a minute per optimizer (measured 55 s for AccumAdamW).
"""

from __future__ import annotations

import pytest
import torch

from trainwell.optim import AccumAdamW, AccumSGDM, ExponentiatedGradient

D = torch.float64


@pytest.mark.parametrize("cls", [AccumSGDM, AccumAdamW, ExponentiatedGradient])
def test_compiled_step_matches_eager(cls: type) -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,)]
    ps = [torch.nn.Parameter(torch.rand(s, generator=g, dtype=D) + 0.1) for s in shapes]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    kw = {} if cls is ExponentiatedGradient else {"accum_steps": 2}
    a, b = cls(ps, lr=1e-2, **kw), cls(qs, lr=1e-2, **kw)

    @torch.compile(backend="aot_eager")
    def compiled_step() -> None:
        a.step()

    for _ in range(6):
        grads = [torch.randn(s, generator=g, dtype=D) for s in shapes]
        for p, q, gr in zip(ps, qs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        compiled_step()
        b.step()
        if kw:
            assert a.is_update_step == b.is_update_step and a.cycle_position == b.cycle_position
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    for p, q in zip(ps, qs):
        for key, val in b.state[q].items():
            torch.testing.assert_close(a.state[p][key], val, rtol=0, atol=1e-12)
