"""Spec optimization.md §2.4 DDP modes for AccumSGDM / AccumAdamW (2 gloo ranks)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from trainwell.optim import AccumAdamW, AccumSGDM

K, CYCLES, B = 2, 3, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(CYCLES * K, 2, B, 3, generator=g, dtype=torch.float64)  # [micro-step, rank, batch, feat]
    y = torch.randn(CYCLES * K, 2, B, 1, generator=g, dtype=torch.float64)
    return x, y


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1).double()


def _run(rank: int, cls: type, sync_moments: bool) -> list[torch.Tensor]:
    x, y = _data()
    model = DDP(_model())
    opt = cls(model.parameters(), lr=0.1, accum_steps=K, sync_moments=sync_moments)
    for t in range(CYCLES * K):
        # mode (a): DDP averages every micro-step; mode (b): no gradient all-reduce at all (forward and
        # backward both inside no_sync), the optimizer all-reduces its moments before each update
        with model.no_sync() if sync_moments else contextlib.nullcontext():
            torch.nn.functional.mse_loss(model(x[t, rank]), y[t, rank]).backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def _reference(cls: type) -> list[torch.Tensor]:
    """Single process on the union of both ranks' micro-batches (mean loss = mean of rank means)."""
    x, y = _data()
    model = _model()
    opt = cls(model.parameters(), lr=0.1, accum_steps=K)
    for t in range(CYCLES * K):
        torch.nn.functional.mse_loss(model(x[t].reshape(2 * B, 3)), y[t].reshape(2 * B, 1)).backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        results = {}
        for cls in (AccumSGDM, AccumAdamW):
            for sync in (False, True):
                results[(cls.__name__, sync)] = _run(rank, cls, sync)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    # spawned children unpickle _worker by its module name (under --import-mode=importlib that is
    # 'tests.optim.test_optim_accumulate_ddp'); they inherit sys.path, so put the repository root and this
    # folder on it
    here = Path(__file__).resolve()
    monkeypatch.syspath_prepend(str(here.parents[2]))
    monkeypatch.syspath_prepend(str(here.parent))
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(_free_port(), d), nprocs=2, join=True)
        r0 = torch.load(os.path.join(d, "rank0.pt"))
        r1 = torch.load(os.path.join(d, "rank1.pt"))
    for key in r0:
        for a, b in zip(r0[key], r1[key]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)  # replicas stay identical
    for cls in (AccumSGDM, AccumAdamW):
        ref = _reference(cls)
        for a, r in zip(r0[(cls.__name__, False)], ref):  # mode (a) is exact
            torch.testing.assert_close(a, r, rtol=0, atol=1e-12)
    # mode (b) is exact for SGD-momentum (the buffer is linear in the gradients) ...
    for a, r in zip(r0[("AccumSGDM", True)], _reference(AccumSGDM)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-12)
    # ... and only approximate for Adam's second moment, but still moves the same way
    for a, r in zip(r0[("AccumAdamW", True)], _reference(AccumAdamW)):
        assert not torch.equal(a, r)
        torch.testing.assert_close(a, r, rtol=0, atol=0.2)
