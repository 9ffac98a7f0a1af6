"""BERT-of-Theseus: grouping, branch selection, freezing, schedules, export (models.md §3.6)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainwell.nn import (
    ConstantReplacement,
    LinearReplacement,
    TheseusModuleList,
    compress,
    export_successor,
)


class Block(nn.Module):
    """A residual MLP block that counts its calls."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + torch.tanh(self.lin(x))


class Toy(nn.Module):
    """Embedding → blocks → head, in the shape of an encoder classifier (pure torch)."""

    def __init__(self, n_blocks: int = 12, d: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([Block(d) for _ in range(n_blocks)])
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.encoder.layer:
            h = block(h)
        out: torch.Tensor = self.head(h)
        return out


def _stack(blocks: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for b in blocks:
        x = b(x)
    return x


def test_grouping_12_to_3_and_divisibility_error() -> None:
    pred = nn.ModuleList([Block() for _ in range(12)])
    t = TheseusModuleList(pred, nn.ModuleList([Block() for _ in range(3)]), ConstantReplacement(0.5))
    assert t.groups() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    blocks = t.blocks_for([False, True, False])
    assert blocks == [
        pred[0],
        pred[1],
        pred[2],
        pred[3],
        t.successor[1],
        pred[8],
        pred[9],
        pred[10],
        pred[11],
    ]
    assert len(t) == 3 and t[2] is t.successor[2]  # len and indexing follow the exported model
    with pytest.raises(ValueError, match=r"divisible.*n_p=12 and n_s=5"):
        TheseusModuleList(pred, nn.ModuleList([Block() for _ in range(5)]), ConstantReplacement())
    with pytest.raises(ValueError, match=r"n_successor"):
        compress(Toy(12), layers="encoder.layer", n_successor=5)


def test_eval_equals_successor_alone_and_p1_p0() -> None:
    torch.manual_seed(0)
    model = Toy(12)
    original = copy.deepcopy(model)
    x = torch.randn(5, 4)
    theseus = compress(model, layers="encoder.layer", n_successor=3)
    # perturb the successor so it differs from the predecessor's first blocks
    with torch.no_grad():
        for p in theseus.successor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    succ = list(theseus.successor)
    model.eval()
    expected = model.head(_stack(succ, model.inp(x)))
    assert torch.equal(model(x), expected)
    model.train()
    theseus.scheduler = ConstantReplacement(1.0)
    assert torch.equal(model(x), expected)
    theseus.scheduler = ConstantReplacement(0.0)
    assert torch.equal(model(x), original(x))
    assert theseus.last_selection == [False, False, False]


def test_only_the_chosen_branch_runs() -> None:
    torch.manual_seed(1)
    model = Toy(12)
    theseus = compress(model, layers="encoder.layer", n_successor=3, scheduler=ConstantReplacement(0.5))
    model.train()
    for _ in range(20):
        before_p = [b.calls for b in theseus.predecessor]
        before_s = [b.calls for b in theseus.successor]
        model(torch.randn(2, 4))
        sel = theseus.last_selection
        assert sel is not None
        for i, group in enumerate(theseus.groups()):
            assert theseus.successor[i].calls - before_s[i] == int(sel[i])
            for j in group:
                assert theseus.predecessor[j].calls - before_p[j] == int(not sel[i])


def test_predecessor_and_head_get_no_gradient_successor_only_when_selected() -> None:
    torch.manual_seed(2)
    model = Toy(12)
    theseus = compress(model, layers="encoder.layer", n_successor=3)
    model.train()
    trainable = {id(p) for p in theseus.successor_parameters()}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    seen = set()
    for _ in range(30):
        model.zero_grad(set_to_none=True)
        model(torch.randn(4, 4)).pow(2).mean().backward()
        sel = theseus.last_selection
        assert sel is not None
        seen.add(tuple(sel))
        for p in [*theseus.predecessor.parameters(), *model.head.parameters(), *model.inp.parameters()]:
            assert p.grad is None
        for i, block in enumerate(theseus.successor):
            has = block.lin.weight.grad is not None and bool(block.lin.weight.grad.abs().sum() > 0)
            assert has == sel[i]
    assert len(seen) > 3 and (False, False, False) in seen  # the choices vary, all-predecessor included


def test_selection_frequency_within_tolerance() -> None:
    torch.manual_seed(3)
    t = TheseusModuleList(nn.ModuleList([Block() for _ in range(4)]), nn.ModuleList([Block(), Block()]),
                          ConstantReplacement(0.5))
    counts = torch.zeros(2)
    n = 10_000
    for _ in range(n):
        list(iter(t))
        assert t.last_selection is not None
        counts += torch.tensor(t.last_selection, dtype=torch.float)
    freq = counts / n
    assert bool(((freq - 0.5).abs() < 0.015).all()), freq
    t.eval()
    list(iter(t))
    assert t.last_selection == [True, True]


def test_schedulers() -> None:
    lin = LinearReplacement(0.3, 6e-4)
    assert lin.p == pytest.approx(0.3)
    for t in (0, 1, 100, 1000, 1166, 1167, 5000):
        assert lin.value(t) == pytest.approx(min(1.0, 0.3 + 6e-4 * t))
    assert lin.value(1167) == 1.0 and lin.value(1166) < 1.0
    for _ in range(1167):
        lin.step()
    assert lin.p == 1.0 and lin.state_dict() == {"t": 1167}
    const = ConstantReplacement(0.5, switch_to_one_after=10)
    vals = []
    for _ in range(12):
        vals.append(const.p)
        const.step()
    assert vals == [0.5] * 10 + [1.0, 1.0]
    assert ConstantReplacement(0.4).value(10**6) == 0.4
    with pytest.raises(ValueError, match=r"ConstantReplacement.*'p'"):
        ConstantReplacement(1.5)
    with pytest.raises(ValueError, match=r"LinearReplacement.*'k'"):
        LinearReplacement(0.3, -1.0)


def test_init_choices_and_bad_inputs() -> None:
    torch.manual_seed(4)
    model = Toy(6)
    blocks = [copy.deepcopy(b) for b in model.encoder.layer]
    t = compress(copy.deepcopy(model), layers="encoder.layer", n_successor=3, init="every_kth")
    for i, j in enumerate([0, 2, 4]):
        assert torch.equal(t.successor[i].lin.weight, blocks[j].lin.weight)
    t = compress(copy.deepcopy(model), layers="encoder.layer", n_successor=3, init="first")
    for i in range(3):
        assert torch.equal(t.successor[i].lin.weight, blocks[i].lin.weight)
    with pytest.raises(ValueError, match=r"'layers' names no submodule"):
        compress(copy.deepcopy(model), layers="bert.encoder.layer", n_successor=3)
    with pytest.raises(TypeError, match=r"'layers'.*ModuleList"):
        compress(copy.deepcopy(model), layers="head", n_successor=1)
    with pytest.raises(ValueError, match=r"'init'"):
        compress(copy.deepcopy(model), layers="encoder.layer", n_successor=3, init="last")
    with pytest.raises(ValueError, match=r"export_successor.*compress"):
        export_successor(model)


def test_compress_does_not_match_by_substring() -> None:
    # a module elsewhere whose name contains "layer" is never touched: only the given path is replaced
    model = Toy(4)
    model.other_layer = nn.ModuleList([Block() for _ in range(4)])
    compress(model, layers="encoder.layer", n_successor=2)
    assert isinstance(model.encoder.layer, TheseusModuleList)
    assert type(model.other_layer) is nn.ModuleList


def test_export_plain_model_equals_eval_output() -> None:
    torch.manual_seed(5)
    model = Toy(12)
    theseus = compress(model, layers="encoder.layer", n_successor=3)
    model.eval()
    x = torch.randn(3, 4)
    small = export_successor(model).eval()
    assert type(small.encoder.layer) is nn.ModuleList and len(small.encoder.layer) == 3
    assert torch.equal(small(x), model(x))
    assert all(p.requires_grad for p in small.parameters())
    assert (
        isinstance(model.encoder.layer, TheseusModuleList)
        and theseus.successor is model.encoder.layer.successor
    )


def _bert_cls(n_layers: int) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(cfg)


@pytest.mark.parametrize("replace_embeddings", [False, True])
def test_hf_bert_eval_exact_and_export_round_trip(tmp_path, replace_embeddings: bool) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    model = _bert_cls(12)
    theseus = compress(model, n_successor=3, replace_embeddings=replace_embeddings)
    with torch.no_grad():
        for p in theseus.successor_parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 128, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    model.eval()
    got = model(input_ids=ids, attention_mask=mask).logits
    small = export_successor(model).eval()
    assert small.config.num_hidden_layers == 3
    assert torch.equal(small(input_ids=ids, attention_mask=mask).logits, got)
    small.save_pretrained(tmp_path)
    loaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert len(loaded.bert.encoder.layer) == 3
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, got, rtol=0, atol=1e-6)
    # training: frozen head and predecessor, the embedding switch samples too
    model.train()
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2])).loss.backward()
    assert all(p.grad is None for p in model.classifier.parameters())
    assert all(p.grad is None for p in theseus.predecessor.parameters())
    assert any(p.grad is not None for p in theseus.successor_parameters())


def test_hf_train_p1_equals_successor_stack() -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(7)
    model = _bert_cls(6)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    compress(model, n_successor=2, scheduler=ConstantReplacement(1.0))
    small = export_successor(model)
    ids = torch.randint(0, 128, (2, 7))
    model.train()
    small.train()
    assert torch.equal(model(ids).logits, small(ids).logits)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="does not reproduce on this toy: over seeds 8-10, lr 1e-3/3e-3 and a switch to p=1 after 150/250 "
    "of 300 steps, the successor trained alone always ends with the lower validation loss (e.g. 0.26 vs "
    "0.60); strict, so a change that makes it pass is noticed",
)
def test_smoke_theseus_beats_successor_trained_alone() -> None:
    """Toy teacher of residual MLP blocks compressed 4:1 on synthetic regression (spec §3.6, optional)."""
    torch.manual_seed(8)
    d = 16
    teacher = Toy(8, d=d)
    teacher.head = nn.Linear(d, 1)
    w = torch.randn(4, 1)
    x_tr, x_va = torch.randn(512, 4), torch.randn(512, 4)
    target = lambda x: torch.sin(x @ w) + 0.5 * x[:, :1] * x[:, 1:2]  # noqa: E731
    y_tr, y_va = target(x_tr), target(x_va)
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for _ in range(600):
        opt.zero_grad()
        (teacher(x_tr) - y_tr).pow(2).mean().backward()
        opt.step()
    alone = copy.deepcopy(teacher)
    alone.encoder.layer = nn.ModuleList([copy.deepcopy(b) for b in alone.encoder.layer[:2]])
    alone.requires_grad_(False)
    alone.encoder.layer.requires_grad_(True)
    theseus_model = copy.deepcopy(teacher)
    t = compress(theseus_model, layers="encoder.layer", n_successor=2)
    opt_a = torch.optim.Adam([p for p in alone.parameters() if p.requires_grad], lr=3e-3)
    opt_t = torch.optim.Adam(list(t.successor_parameters()), lr=3e-3)
    for _ in range(300):
        for m, o in ((alone, opt_a), (theseus_model, opt_t)):
            o.zero_grad()
            (m(x_tr) - y_tr).pow(2).mean().backward()
            o.step()
        t.scheduler.step()
    alone.eval()
    theseus_model.eval()
    with torch.no_grad():
        la = (alone(x_va) - y_va).pow(2).mean()
        lt = (theseus_model(x_va) - y_va).pow(2).mean()
    assert lt < la
