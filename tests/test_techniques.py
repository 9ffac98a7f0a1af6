"""The technique registry: every entry round-trips on a tiny model, specs parse, steps match direct calls."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.compare._tasks import TinyNet, make_data
from torch import nn

from trainwell.techniques import (
    Technique,
    expand_techniques,
    get_technique,
    list_techniques,
    parse_technique_spec,
)

EXPECTED = {"baseline", "zlpr", "logit_adjust", "focal", "class_balanced", "taylor_ce", "am_softmax", "rdrop",
            "flooding", "noise", "gp", "fast_gp", "fgm", "pgd", "vat", "parameter_gp", "weissi", "soft_clip",
            "hard_clip", "accum_adamw", "accum_sgdm"}


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_registry_lists_every_builtin() -> None:
    names = {t.name for t in list_techniques()}
    assert EXPECTED <= names
    assert [t.name for t in list_techniques("*gp")] == ["fast_gp", "gp", "parameter_gp"]
    for t in list_techniques():
        assert t.family in ("baseline", "loss", "regularizer", "optimizer") and t.source
        assert t.label == t.name  # built-ins carry their defaults, so no parameter shows in the label


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_technique_takes_one_step(name: str) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    x, y = make_data(16)
    if name == "zlpr":
        y = torch.stack([y, 1 - y], 1)  # multi-label targets [B, C]
    tech = get_technique(name)
    opt = tech.build_optimizer(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    step = tech.build(model, None, opt)
    opt.zero_grad()
    loss = step((x, y))
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
    assert math.isfinite(float(loss))
    grads = [p.grad for p in model.parameters()]
    if name == "am_softmax":  # the cosine head ignores the bias
        assert model.head.bias.grad is None
        grads = [p.grad for n, p in model.named_parameters() if n != "head.bias"]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    opt.step()
    # the weights the two-pass methods perturb are restored: only the optimizer moved them
    if name in ("fgm", "pgd", "fast_gp", "vat", "parameter_gp", "noise", "gp"):
        sgd_expected = [b - 0.1 * g for b, g in zip(before, grads)]
        assert all(torch.allclose(p, e) for p, e in zip(model.parameters(), sgd_expected))
    if name.startswith("accum_"):
        assert type(opt).__name__ == {"accum_adamw": "AccumAdamW", "accum_sgdm": "AccumSGDM"}[name]
        assert opt.param_groups[0]["lr"] == 0.1


def test_steps_equal_the_direct_calls() -> None:
    from trainwell.losses import focal_loss, log_prior_from_counts, logit_adjusted_cross_entropy
    from trainwell.regularizers import FGM

    x, y = make_data(16)

    def run(tech: Technique | None, direct: bool = False, fn=None) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        model = TinyNet().eval()
        if tech is not None:
            tech.build(model, _ce, None)((x, y))
        else:
            fn(model)
        return _grads(model)

    # flooding at b = 0 is plain training, bit for bit
    base = run(get_technique("baseline"))
    assert all(torch.equal(a, b) for a, b in zip(run(get_technique("flooding:level=0")), base))
    # focal with γ = 0 is cross-entropy
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(run(get_technique("focal:gamma=0")), base))
    # FGM through the registry = FGM called by hand
    fgm = run(get_technique("fgm:epsilon=0.5"))

    def by_hand(m: nn.Module) -> None:
        FGM(m.get_input_embeddings(), epsilon=0.5).step(lambda: _ce(m, (x, y)))

    assert all(torch.equal(a, b) for a, b in zip(fgm, run(None, fn=by_hand)))
    # logit adjustment with known counts = the functional loss with that prior
    counts = [30.0, 10.0]
    la = run(get_technique("logit_adjust").with_params(counts=counts))

    def la_hand(m: nn.Module) -> None:
        logit_adjusted_cross_entropy(m(x), y, log_prior_from_counts(counts)).backward()

    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(la, run(None, fn=la_hand)))
    _ = focal_loss  # imported for the reader: focal(γ=0) == CE is checked above

    # hard clipping leaves a gradient of norm <= max_norm
    torch.manual_seed(0)
    m = TinyNet()
    get_technique("hard_clip:max_norm=0.01").build(m, _ce, None)((x, y))
    total = torch.sqrt(sum((p.grad**2).sum() for p in m.parameters()))
    assert float(total) <= 0.01 * (1 + 1e-4)


def test_specs_and_grids() -> None:
    assert parse_technique_spec("FGM:epsilon=0.3,1.0") == ("fgm", {"epsilon": [0.3, 1.0]})
    assert parse_technique_spec("gp:per_sample=true:epsilon=1") == (
        "gp",
        {"per_sample": [True], "epsilon": [1]},
    )
    t = get_technique("fgm:epsilon=0.3")
    assert t.params["epsilon"] == 0.3 and t.label == "fgm:epsilon=0.3"
    grid = expand_techniques(["baseline", "pgd:epsilon=0.5,1.0:steps=2,3"])
    assert [g.label for g in grid] == ["baseline", "pgd:epsilon=0.5:steps=2", "pgd:epsilon=0.5",
                                       "pgd:steps=2", "pgd"]
    custom = Technique("mine", lambda m, lf, o: (lambda b: torch.zeros(())))
    assert expand_techniques(custom) == [custom]


def test_bad_specs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"technique.*registered"):
        get_technique("no_such_thing")
    with pytest.raises(ValueError, match="known parameter of 'fgm'"):
        get_technique("fgm:epsilion=0.3")
    with pytest.raises(TypeError, match=r"fgm:epsilon.*a number"):
        get_technique("fgm:epsilon=big")
    with pytest.raises(TypeError, match=r"pgd:steps.*an int"):
        get_technique("pgd:steps=2.5")
    with pytest.raises(ValueError, match="grid"):
        get_technique("fgm:epsilon=0.3,1.0")
    with pytest.raises(ValueError, match="key=value"):
        get_technique("fgm:epsilon")
    with pytest.raises(ValueError, match="each technique once"):
        expand_techniques(["fgm", "fgm:epsilon=1.0"])
    with pytest.raises(TypeError, match="make_step"):
        Technique("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Technique("a:b", lambda m, lf, o: None)
    with pytest.raises(TypeError, match="embedding"):
        get_technique("fgm").build(nn.Linear(2, 2), _ce, None)  # no get_input_embeddings()


def test_unlabelled_batches_train_the_consistency_term_alone() -> None:
    """``(x, None)`` / ``{"labels": None}``: VAT's α·LDS and R-Drop's α·½(KL¹² + KL²¹), nothing else."""
    from trainwell.losses import symmetric_kl
    from trainwell.regularizers import VAT

    x, _ = make_data(16)

    def fresh(train: bool) -> nn.Module:
        torch.manual_seed(0)
        return TinyNet().train(train)

    # R-Drop: two dropout passes on [x; x], the KL term alone
    m = fresh(True)
    torch.manual_seed(5)
    out = get_technique("rdrop:alpha=2:concat=true").build(m, _ce, None)((x, None))
    reg = _grads(m)
    m = fresh(True)
    torch.manual_seed(5)
    l1, l2 = m(torch.cat([x, x])).chunk(2)
    kl = 2.0 * symmetric_kl(l1, l2)
    kl.backward()
    assert float(out) > 0 and torch.equal(out, kl.detach())
    assert all(torch.equal(a, b) for a, b in zip(reg, _grads(m)))

    # VAT: the same as VAT.step on a closure that returns logits only (no supervised term)
    m = fresh(False)
    torch.manual_seed(7)
    out = get_technique("vat:epsilon=0.5:xi=0.001").build(m, _ce, None)({"ids": x, "labels": None})
    reg = _grads(m)
    m = fresh(False)
    torch.manual_seed(7)
    ref = VAT(m.get_input_embeddings(), epsilon=0.5, xi=0.001).step(lambda: m(x))
    assert float(out) > 0 and torch.equal(out, ref)
    assert all(torch.equal(a, b) for a, b in zip(reg, _grads(m)))
    assert any(float(g.abs().sum()) > 0 for g in reg)
