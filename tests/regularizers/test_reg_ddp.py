"""DDP (2 gloo ranks): the regularizer step on each rank's half batch equals the single-process step on
the union batch, and only the final backward all-reduces (counted with a communication hook)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from trainwell.regularizers import FGM, PGD, FastGradientPenalty

V, D, C, B = 20, 6, 3, 4


class TokModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.fc1 = nn.Linear(D, 8)
        self.fc2 = nn.Linear(8, C)
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(self.emb(ids))).mean(1))


def data():
    g = torch.Generator().manual_seed(123)
    return torch.randint(0, V, (B, 5), generator=g), torch.randint(0, C, (B,), generator=g)


def make_regs(emb: nn.Module, ddp_model=None):
    return {
        "fgm_output": FGM(emb, epsilon=0.5, mode="output", ddp_model=ddp_model),
        "fgm_output_clean": FGM(
            emb, epsilon=0.5, mode="output", include_clean_loss=True, ddp_model=ddp_model
        ),
        "pgd_output": PGD(emb, epsilon=0.5, alpha=0.2, steps=3, mode="output", ddp_model=ddp_model),
        "fast_gp_per_sample": FastGradientPenalty(emb, epsilon=0.1, per_sample=True, ddp_model=ddp_model),
    }


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = TokModel()
        ddp = nn.parallel.DistributedDataParallel(model)
        calls = [0]

        def counting_allreduce(state, bucket):
            calls[0] += 1
            fut = dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future()
            return fut.then(lambda f: f.value()[0])

        ddp.register_comm_hook(None, counting_allreduce)
        ids, y = data()
        lo, hi = rank * B // world, (rank + 1) * B // world
        results = {}
        for name, reg in make_regs(model.emb, ddp).items():
            ddp.zero_grad(set_to_none=True)
            before = calls[0]
            reg.step(lambda: F.cross_entropy(ddp(ids[lo:hi]), y[lo:hi]))
            results[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
            results[name + "/allreduce_calls"] = calls[0] - before
        # a plain synced step gives the number of buckets of one all-reduce round
        ddp.zero_grad(set_to_none=True)
        before = calls[0]
        F.cross_entropy(ddp(ids[lo:hi]), y[lo:hi]).backward()
        results["plain/allreduce_calls"] = calls[0] - before
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_ddp_step_matches_single_process_union_batch(tmp_path, monkeypatch):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("gloo backend unavailable")
    # spawned children unpickle _worker by its module name; under --import-mode=importlib that name is
    # 'tests.regularizers.test_reg_ddp', importable once the repository root is on the (inherited) sys.path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    ids, y = data()
    torch.manual_seed(0)
    model = TokModel()
    plain_calls = ranks[0]["plain/allreduce_calls"]
    assert plain_calls >= 1
    for name, reg in make_regs(model.emb).items():
        model.zero_grad(set_to_none=True)
        reg.step(lambda: F.cross_entropy(model(ids), y))
        for r in range(2):
            # the attack passes ran under no_sync: exactly one all-reduce round per step
            assert ranks[r][name + "/allreduce_calls"] == plain_calls, name
            for n, p in model.named_parameters():
                torch.testing.assert_close(
                    ranks[r][name][n], p.grad, rtol=1e-9, atol=1e-12, msg=f"{name} {n}"
                )
