"""Two-pass regularizer benchmarks: step time relative to a plain step, and gradients vs exact references.

Run: ``.venv/bin/python benchmarks/regularizers.py [--quick] [--device cuda]``.

Model: a 2-layer ``BertForSequenceClassification`` built from a config (no download), wrapped so that its
first argument may be token ids or the word-embedding output (bert4torch's VAT feeds embeddings back in).
Dropout is 0 so that every pass of a step sees the same function (the gradient references need that;
timings hardly change).

Table 1 — time per training step (zero_grad + forward/backward passes, no optimizer step), batch 16 × 64
tokens, float32, relative to the plain step, and the step's peak tensor memory above the live model (it
includes the gradients the step leaves in ``.grad``): trainwell FGM / PGD / VAT / exact gradient penalty
(``gradient_penalty``, double backprop) / finite-difference ``FastGradientPenalty`` vs bert4torch 0.6.2's
``AdversarialTraining`` callback (modes fgm, pgd, gradient_penalty, vat) driven by a torch4keras
``Trainer`` (its ``train_step`` does forward + loss + backward; the callback wraps it).
Targets (issue "Regularizers" §3): FGM ≤ 2.05× plain, fast GP ≤ 2.1× plain; exact GP reported.

Table 2 — gradient left in ``.grad`` vs an exact reference computed in this script by hand (float64, a
smaller model and batch so that differences are rounding, not float32 noise). ``E`` = word-embedding
matrix, ``e`` = its output, ``L`` = batch-mean cross-entropy, ε = 1 (FGM/PGD/GP), PGD α = 0.3, 3 steps:

* FGM (adv):        ∇θ L(E + Δ),  Δ = ε·g/‖g‖_F, g = ∇_E L   (the post's objective; trainwell default)
* FGM (clean+adv):  ∇θ L(E) + ∇θ L(E + Δ)                     (trainwell include_clean_loss=True; bert4torch)
* PGD:              r ← Π_ε(r + α·g_r/‖g_r‖) three times, g_r = ∇_E L(E + r); then as FGM with Δ = r
* GP (output):      ∇θ [L + ε/2·‖∇_e L‖²] by double backprop (the post; trainwell gradient_penalty). The
  finite-difference FastGradientPenalty is only first-order accurate: its error relative to the penalty's
  contribution should shrink ∝ ε (shown at ε and ε/10).
* GP (matrix):      ∇θ [L + ε/2·‖∇_E L‖²] by double backprop (what bert4torch's gradient_penalty intends)
* VAT:              ∇θ [L + KL(sg p(x) ‖ p(x + r))] with trainwell's own r_adv (checks the assembly; the
  power iteration itself is tested in the unit tests). bert4torch's vat is run with ``adv_alpha=0``, where
  a correct implementation must return exactly ∇θ L.

"rel. err" = ‖g − g_ref‖ / ‖g_ref − g_task‖: the error relative to the regularizer's own contribution
(g_task = ∇θ L, or 2∇θ L for clean+adv references). Values ≪ 1 mean the regularizer is implemented right;
≈ 1 or more means the regularizer's effect is missing or wrong.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import _harness as H

EMB_NAME = "word_embeddings"
EPS = 1.0
PGD_ALPHA, PGD_STEPS = 0.3, 3


class Net(nn.Module):
    """BertForSequenceClassification whose first input is token ids or word-embedding outputs."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import BertForSequenceClassification

        self.bert = BertForSequenceClassification(config)

    def embedding(self) -> nn.Embedding:
        emb = self.bert.get_input_embeddings()
        assert isinstance(emb, nn.Embedding)
        return emb

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if not x.is_floating_point():
            x = self.embedding()(x)
        return self.bert(inputs_embeds=x, attention_mask=attention_mask).logits  # type: ignore[no-any-return]


def make_net(hidden: int, vocab: int, seq: int, dtype: torch.dtype, device: str, seed: int = 0) -> Net:
    from transformers import BertConfig

    torch.manual_seed(seed)
    cfg = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=4 * hidden, max_position_embeddings=max(64, seq), num_labels=4,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    cfg._attn_implementation = "eager"  # double backward (exact GP) needs a twice-differentiable attention
    return Net(cfg).to(device=device, dtype=dtype)


def make_batch(batch: int, seq: int, vocab: int, device: str, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[: batch // 2, seq - seq // 4 :] = 0  # some padding
    y = torch.randint(0, 4, (batch,), generator=g)
    return ids.to(device), mask.to(device), y.to(device)


# ------------------------------------------------------------------------------------------ step functions


def trainwell_steps(net: Net, ids: Tensor, mask: Tensor, y: Tensor) -> dict[str, Callable[[], Any]]:
    """name -> a callable doing zero_grad + one regularized step with trainwell (leaves .grad filled)."""
    import trainwell.regularizers as R
    emb = net.embedding()

    def closure() -> Tensor:
        return F.cross_entropy(net(ids, mask), y)

    def closure_logits() -> tuple[Tensor, Tensor]:
        logits = net(ids, mask)
        return F.cross_entropy(logits, y), logits

    fgm = R.FGM(emb, epsilon=EPS)
    fgm_clean = R.FGM(emb, epsilon=EPS, include_clean_loss=True)
    pgd = R.PGD(emb, epsilon=EPS, alpha=PGD_ALPHA, steps=PGD_STEPS)
    pgd_clean = R.PGD(emb, epsilon=EPS, alpha=PGD_ALPHA, steps=PGD_STEPS, include_clean_loss=True)
    vat = R.VAT(emb, epsilon=EPS, xi=1e-6, power_iterations=1)
    fast_gp = R.FastGradientPenalty(emb, epsilon=EPS)
    fast_gp_small = R.FastGradientPenalty(emb, epsilon=0.1 * EPS)

    def plain() -> None:
        net.zero_grad(set_to_none=True)
        closure().backward()

    def exact_gp() -> None:
        net.zero_grad(set_to_none=True)
        with R.capture_embedding_output(emb) as outs:
            loss = closure()
        (loss + R.gradient_penalty(loss, outs[0], epsilon=EPS)).backward()

    def run(reg: Any, fn: Callable[[], Any] = closure) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            reg.step(fn)

        return step

    return {
        "plain": plain,
        "FGM": run(fgm),
        "FGM clean+adv": run(fgm_clean),
        "PGD": run(pgd),
        "PGD clean+adv": run(pgd_clean),
        "VAT": run(vat, closure_logits),
        "GP exact": exact_gp,
        "GP fast": run(fast_gp),
        "_GP fast ε/10": run(fast_gp_small),
        "_vat_object": lambda: vat,
    }


def bert4torch_steps(
    net: Net, ids: Tensor, mask: Tensor, y: Tensor, vat_alpha: float = 1.0
) -> dict[str, Callable[[], Any]]:
    """name -> zero_grad + bert4torch AdversarialTraining.train_step (torch4keras: fwd/loss/bwd)."""
    H.import_bert4torch()
    from bert4torch.callbacks import AdversarialTraining
    from torch4keras.trainer import Trainer

    out: dict[str, Callable[[], Any]] = {}
    for mode in ("fgm", "pgd", "gradient_penalty", "vat"):
        trainer = Trainer(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        trainer.compile(loss=nn.CrossEntropyLoss(), optimizer=opt)
        config: dict[str, Any] = {"epsilon": EPS, "emb_name": EMB_NAME}
        if mode == "pgd":
            config.update(K=PGD_STEPS, alpha=PGD_ALPHA)
        if mode == "vat":
            config.update(adv_alpha=vat_alpha)
        cb = AdversarialTraining(mode, config)
        cb.set_trainer(trainer)
        cb.set_model(net)
        cb.set_optimizer(opt)
        cb.on_train_begin()

        def step(cb: Any = cb) -> None:
            net.zero_grad(set_to_none=True)
            cb.train_step([ids, mask], y)

        out[f"bert4torch {mode}"] = step
    return out


# ------------------------------------------------------------------------------------------ references


def _grads(net: Net, loss: Tensor, retain_graph: bool = False) -> list[Tensor]:
    params = [p for p in net.parameters() if p.requires_grad]
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=retain_graph)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def _loss_with_weight_shift(net: Net, ids: Tensor, mask: Tensor, y: Tensor, delta: Tensor | None) -> Tensor:
    """L with the embedding matrix E replaced by E + delta (delta constant), via an explicit lookup."""
    weight = net.embedding().weight
    w = weight if delta is None else weight + delta
    e = F.embedding(ids, w, padding_idx=net.embedding().padding_idx)
    return F.cross_entropy(net(e, mask), y)


def references(
    net: Net, ids: Tensor, mask: Tensor, y: Tensor, vat_r: Tensor | None
) -> dict[str, list[Tensor]]:
    weight = net.embedding().weight
    ref: dict[str, list[Tensor]] = {}
    loss = _loss_with_weight_shift(net, ids, mask, y, None)
    task = _grads(net, loss)
    ref["task"] = task
    ref["2×task"] = [2 * g for g in task]
    # FGM: one normalized step on the matrix
    (g_e,) = torch.autograd.grad(_loss_with_weight_shift(net, ids, mask, y, None), [weight])
    delta = EPS * g_e / (g_e.norm() + 1e-8)
    adv = _grads(net, _loss_with_weight_shift(net, ids, mask, y, delta))
    ref["FGM adv"] = adv
    ref["FGM clean+adv"] = [a + b for a, b in zip(task, adv)]
    # PGD: projected steps on the matrix
    r = torch.zeros_like(weight)
    for _ in range(PGD_STEPS):
        (g_r,) = torch.autograd.grad(_loss_with_weight_shift(net, ids, mask, y, r), [weight])
        r = r + PGD_ALPHA * g_r / (g_r.norm() + 1e-8)
        if r.norm() > EPS:
            r = EPS * r / r.norm()
    adv = _grads(net, _loss_with_weight_shift(net, ids, mask, y, r.detach()))
    ref["PGD adv"] = adv
    ref["PGD clean+adv"] = [a + b for a, b in zip(task, adv)]
    # GP on the embedding output e (double backprop)
    e = F.embedding(ids, weight)
    loss = F.cross_entropy(net(e, mask), y)
    (g_out,) = torch.autograd.grad(loss, [e], create_graph=True)
    ref["GP output"] = _grads(net, loss + 0.5 * EPS * g_out.pow(2).sum(), retain_graph=True)
    ref["GP output ε/10"] = _grads(net, loss + 0.05 * EPS * g_out.pow(2).sum())
    # GP on the embedding matrix E (what bert4torch's gradient_penalty mode intends)
    loss = _loss_with_weight_shift(net, ids, mask, y, None)
    (g_mat,) = torch.autograd.grad(loss, [weight], create_graph=True)
    ref["GP matrix"] = _grads(net, loss + 0.5 * EPS * g_mat.pow(2).sum())
    # VAT with a given perturbation r of the embedding output
    if vat_r is not None:
        e = F.embedding(ids, weight)
        logits = net(e, mask)
        loss = F.cross_entropy(logits, y)
        p_log = F.log_softmax(logits.detach(), -1)
        q_log = F.log_softmax(net(e + vat_r, mask), -1)
        kl = (p_log.exp() * (p_log - q_log)).sum(-1).mean()
        ref["VAT"] = _grads(net, loss + kl)
    return ref


def _flat(gs: list[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in gs])


def _current_grads(net: Net) -> list[Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for p in net.parameters() if p.requires_grad]


def gradient_table(args: Any) -> list[bool]:
    dtype = torch.float64
    vocab, hidden, batch, seq = 100, 32, 4, 16
    base = make_net(hidden, vocab, seq, dtype, args.device)
    ids, mask, y = make_batch(batch, seq, vocab, args.device)

    # (implementation name, reference name, task reference name for the rel. err denominator)
    checks = [
        ("trainwell FGM", "FGM adv", "task"),
        ("trainwell FGM clean+adv", "FGM clean+adv", "2×task"),
        ("bert4torch fgm", "FGM clean+adv", "2×task"),
        ("trainwell PGD", "PGD adv", "task"),
        ("trainwell PGD clean+adv", "PGD clean+adv", "2×task"),
        ("bert4torch pgd", "PGD clean+adv", "2×task"),
        ("trainwell GP exact", "GP output", "task"),
        ("trainwell GP fast", "GP output", "task"),
        ("trainwell GP fast ε/10", "GP output ε/10", "task"),
        ("bert4torch gradient_penalty", "GP matrix", "task"),
        ("bert4torch gradient_penalty", "2×task", "task"),
        ("trainwell VAT", "VAT", "task"),
        ("bert4torch vat (adv_alpha=0)", "task", "task"),
        ("bert4torch vat (adv_alpha=0)", "2×task", "task"),
    ]
    got: dict[str, list[Tensor] | str] = {}
    net = copy.deepcopy(base)
    vat_r = None
    try:
        steps = trainwell_steps(net, ids, mask, y)
        for name in (
            "FGM",
            "FGM clean+adv",
            "PGD",
            "PGD clean+adv",
            "VAT",
            "GP exact",
            "GP fast",
            "_GP fast ε/10",
        ):
            try:
                steps[name]()
                got[f"trainwell {name.lstrip('_')}"] = _current_grads(net)
            except Exception as err:  # report, keep going
                got[f"trainwell {name.lstrip('_')}"] = f"error: {type(err).__name__}: {err}"[:120]
        vat_obj = steps["_vat_object"]()
        if vat_obj.last_perturbation is not None:
            vat_r = vat_obj.last_perturbation[0].detach()
    except ImportError as err:
        for name in ("FGM", "FGM clean+adv", "PGD", "PGD clean+adv", "VAT", "GP exact", "GP fast"):
            got[f"trainwell {name}"] = f"unavailable: {err}"[:120]
    for vat_alpha, label in ((1.0, ""), (0.0, " (adv_alpha=0)")):
        net_b = copy.deepcopy(base)
        b_steps = bert4torch_steps(net_b, ids, mask, y, vat_alpha=vat_alpha)
        for name, fn in b_steps.items():
            if label and name != "bert4torch vat":
                continue
            try:
                fn()
                got[name + label] = _current_grads(net_b)
            except Exception as err:
                got[name + label] = f"error: {type(err).__name__}: {err}"[:120]
    ref = references(copy.deepcopy(base), ids, mask, y, vat_r)

    rows: list[list[Any]] = []
    status: dict[str, float] = {}
    for impl, ref_name, task_name in checks:
        g = got.get(impl)
        if ref_name not in ref:
            rows.append([impl, ref_name, None, None, "reference unavailable"])
            continue
        if not isinstance(g, list):
            rows.append([impl, ref_name, None, None, g or "not run"])
            continue
        g_ref, g_task = _flat(ref[ref_name]), _flat(ref[task_name])
        diff = H.max_abs_diff(_flat(g), g_ref)
        denom = float((g_ref - g_task).norm())
        rel = float((_flat(g) - g_ref).norm()) / denom if denom > 0 else float("nan")
        status[f"{impl} vs {ref_name}"] = rel
        contribution = denom / float(g_task.norm())
        note = f"‖g_ref − g_task‖/‖g_task‖ = {contribution:.2e}" if ref_name != task_name else "g_ref = ∇θ L"
        if ref_name == task_name:
            rel_str: Any = f"{float((_flat(g) - g_ref).norm()) / float(g_ref.norm()):.2e} (÷‖∇L‖)"
        else:
            rel_str = rel
        rows.append([impl, ref_name, diff, rel_str, note])
    print(f"\n### Gradient vs exact reference (float64, {batch}×{seq} tokens, hidden {hidden}, ε={EPS})\n")
    print(H.markdown_table(["implementation", "reference", "max abs diff", "rel. err", "note"], rows))
    print()
    return []


# ------------------------------------------------------------------------------------------ timing


def timing_table(args: Any) -> list[bool]:
    vocab, hidden, batch, seq = 1000, 128, 16, 64
    base = make_net(hidden, vocab, seq, torch.float32, args.device)
    ids, mask, y = make_batch(batch, seq, vocab, args.device)
    n_params = sum(p.numel() for p in base.parameters())
    results: list[H.Result] = []
    net = copy.deepcopy(base)
    try:
        steps = trainwell_steps(net, ids, mask, y)
    except ImportError as err:
        print(f"trainwell.regularizers unavailable: {err}")
        steps = {}
    plain_net = copy.deepcopy(base)

    def plain() -> None:
        plain_net.zero_grad(set_to_none=True)
        F.cross_entropy(plain_net(ids, mask), y).backward()

    notes = {
        "plain step": "forward + backward",
        "trainwell FGM": "2 fwd + 2 bwd (one autograd.grad)",
        "trainwell FGM clean+adv": "as bert4torch: clean loss also backpropagated",
        "trainwell PGD": f"{PGD_STEPS + 1} fwd + {PGD_STEPS + 1} bwd",
        "trainwell VAT": "K=1: 3 fwd + 2 bwd",
        "trainwell GP exact": "double backprop",
        "trainwell GP fast": "finite difference: 2 fwd + 2 bwd",
        "bert4torch fgm": "clean + adv backward",
        "bert4torch pgd": f"K={PGD_STEPS}",
        "bert4torch gradient_penalty": "retain_graph + 2nd backward (no penalty term, see table 2)",
        "bert4torch vat": "retain_graph; noise_var 1e-5, adv_step 1e-3",
    }
    fns: dict[str, Callable[[], Any]] = {"plain step": plain}
    for name, fn in steps.items():
        if not name.startswith("_") and name != "plain":
            fns[f"trainwell {name}"] = fn
    b_net = copy.deepcopy(base)
    fns.update(bert4torch_steps(b_net, ids, mask, y))
    timings = H.time_many(fns, args.repeats, args.warmup, args.device)
    for name, t in timings.items():
        if isinstance(t, Exception):
            results.append(H.Result(name, note=f"error: {type(t).__name__}: {t}"[:100]))
            continue
        for model in (net, plain_net, b_net):  # grads left by earlier calls must not offset the peak
            model.zero_grad(set_to_none=True)
        peak = H.peak_memory(fns[name], args.device)
        results.append(H.Result(name, t, peak, note=notes.get(name, "")))
    print(H.results_table(results, "plain step", title=(
        f"Time per training step, BERT 2 layers hidden {hidden} ({n_params / 1e6:.2f}M params), "
        f"batch {batch}×{seq}, float32")))
    by = {r.name: r for r in results}
    met = []
    base_ms = by["plain step"].timing.median_ms  # type: ignore[union-attr]
    for name, limit in (("trainwell FGM", 2.05), ("trainwell GP fast", 2.1)):
        r = by.get(name)
        if r is not None and r.timing is not None:
            met.append(H.print_target(f"{name} / plain step", r.timing.median_ms / base_ms, limit))
    r = by.get("trainwell GP exact")
    if r is not None and r.timing is not None:
        print(
            f"- Exact GP (double backprop) / plain step: {r.timing.median_ms / base_ms:.2f}× (reported, no "
            "target)"
        )
    print()
    return met


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    print("# Regularizer benchmarks\n")
    print(H.environment_line(args))
    met = timing_table(args)
    gradient_table(args)
    print(f"Targets met: {sum(met)}/{len(met)}")


if __name__ == "__main__":
    main()
