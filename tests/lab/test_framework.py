"""The lab framework: CLI, results.json schema, index.html, resume/--force, atomic writes, torchrun."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
from pathlib import Path

import pytest
import torch

import trainwell.lab.experiments as experiments_pkg
from trainwell.lab import io as lab_io
from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.cli import main
from trainwell.lab.runner import SEED_BASE, run_experiment

CALLS: list[int] = []
FAIL_ON: set[int] = set()


def _toy_run_seed(ctx: RunContext) -> SeedResult:
    CALLS.append(ctx.seed)
    if ctx.seed in FAIL_ON:
        raise RuntimeError(f"boom at seed {ctx.seed}")
    # Draws from the global RNG: equal across runs only if the runner seeds before every cell.
    a = float(torch.rand(()))
    b = a + 0.5
    curve = [float(x) for x in torch.rand(4)]
    return SeedResult(
        values={"a": a, "b": b},
        secondary={"other": {"a": 2 * a, "b": 2 * b}},
        curves={"a/loss": curve, "b/loss": [x + 1 for x in curve]},
        info={"pid": os.getpid(), "seed": ctx.seed},
    )


def _toy_judge(stats: dict[str, MethodStats]) -> bool:
    return stats["b"].mean > stats["a"].mean


def _make_toy(version: str = "1", judge=_toy_judge) -> Experiment:
    return Experiment(
        name="toy",
        title="Toy experiment",
        metric="score",
        claim="b beats a",
        methods=["a", "b"],
        run_seed=_toy_run_seed,
        judge=judge,
        source="nowhere",
        reported="b > a",
        seeds={"tiny": 1, "quick": 2, "full": 3},
        version=version,
    )


TOY = _make_toy()


@pytest.fixture
def toy_registry(monkeypatch):
    CALLS.clear()
    FAIL_ON.clear()
    reg = {"toy": TOY}
    monkeypatch.setattr(experiments_pkg, "registry", lambda strict=False: dict(reg))
    return reg


def _run(tmp_path: Path, *extra: str, plots: bool = False) -> int:
    flags = [] if plots else ["--no-plots"]  # plotting is slow on a busy machine; two tests check the PNGs
    return main(["lab", "toy", "--out", str(tmp_path), "--no-progress", *flags, *extra])


def test_cli_writes_report_files_and_schema(tmp_path, toy_registry, capsys):
    assert _run(tmp_path, "--seeds", "3", plots=True) == 0
    out = capsys.readouterr().out
    exp_dir = tmp_path / "toy"
    for name in ("results.json", "table.md", "metric.png", "curves.png"):
        assert (exp_dir / name).is_file(), name
    assert (tmp_path / "index.html").is_file()
    assert sorted(p.name for p in (exp_dir / "cells").iterdir()) == [
        f"quick-seed{SEED_BASE + k}.json" for k in range(3)]

    res = json.loads((exp_dir / "results.json").read_text())
    assert isinstance(res["experiment"], str) and res["experiment"] == "toy"
    assert isinstance(res["metric"], str) and res["metric"] == "score"
    assert isinstance(res["claim"], str) and res["claim"] == "b beats a"
    assert isinstance(res["claim_holds"], bool) and res["claim_holds"] is True
    assert set(res["results"]) == {"a", "b"}
    for stats in res["results"].values():
        assert set(stats) >= {"mean", "std", "values"}
        assert len(stats["values"]) == 3
        assert all(isinstance(v, float) for v in stats["values"])
        assert stats["mean"] == pytest.approx(statistics.fmean(stats["values"]), abs=1e-12)
        assert stats["std"] == pytest.approx(statistics.stdev(stats["values"]), abs=1e-12)
    assert res["secondary"]["other"]["a"]["mean"] == pytest.approx(2 * res["results"]["a"]["mean"])
    # Printed summary: one row per method with mean ± std and the verdict.
    assert "toy" in out and "± " in out and "claim HOLDS" in out
    a = res["results"]["a"]
    assert f"{a['mean']:.4f} ± {a['std']:.4f}" in out
    table = (exp_dir / "table.md").read_text()
    assert "| a |" in table and "Claim holds on this run: yes" in table


def test_index_links_point_at_existing_files(tmp_path, toy_registry):
    assert _run(tmp_path, "--seeds", "1", plots=True) == 0
    html = (tmp_path / "index.html").read_text()
    links = re.findall(r"(?:href|src)='([^'#]+)'", html)
    assert {"toy/table.md", "toy/results.json", "toy/metric.png"} <= set(links)
    for link in links:
        assert (tmp_path / link).is_file(), link
    assert (tmp_path / "results.md").is_file()


def test_rerun_skips_cached_cells_and_force_recomputes(tmp_path, toy_registry):
    assert _run(tmp_path, "--seeds", "2") == 0
    assert CALLS == [SEED_BASE, SEED_BASE + 1]
    first = json.loads((tmp_path / "toy" / "results.json").read_text())["results"]

    assert _run(tmp_path, "--seeds", "2") == 0
    assert CALLS == [SEED_BASE, SEED_BASE + 1]  # nothing recomputed

    assert _run(tmp_path, "--seeds", "3") == 0
    assert CALLS == [SEED_BASE, SEED_BASE + 1, SEED_BASE + 2]  # only the new seed

    assert _run(tmp_path, "--seeds", "2", "--force") == 0
    assert CALLS[3:] == [SEED_BASE, SEED_BASE + 1]
    again = json.loads((tmp_path / "toy" / "results.json").read_text())["results"]
    # Recomputed values equal the first ones: every cell is seeded by the runner.
    assert again["a"]["values"] == first["a"]["values"]


def test_interrupted_run_resumes_from_finished_cells(tmp_path, toy_registry):
    FAIL_ON.add(SEED_BASE + 1)
    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, "--seeds", "2")
    assert (tmp_path / "toy" / "cells" / f"quick-seed{SEED_BASE}.json").is_file()
    assert not (tmp_path / "toy" / "results.json").exists()
    FAIL_ON.clear()
    CALLS.clear()
    assert _run(tmp_path, "--seeds", "2") == 0
    assert CALLS == [SEED_BASE + 1]


def test_changed_version_recomputes_cells(tmp_path, toy_registry):
    assert _run(tmp_path, "--seeds", "1") == 0
    toy_registry["toy"] = _make_toy(version="2")
    assert _run(tmp_path, "--seeds", "1") == 0
    assert CALLS == [SEED_BASE, SEED_BASE]


def test_corrupt_cell_is_recomputed(tmp_path, toy_registry):
    assert _run(tmp_path, "--seeds", "1") == 0
    (tmp_path / "toy" / "cells" / f"quick-seed{SEED_BASE}.json").write_text("{not json")
    assert _run(tmp_path, "--seeds", "1") == 0
    assert CALLS == [SEED_BASE, SEED_BASE]


def test_no_temp_files_left_and_failed_write_keeps_old_file(tmp_path, toy_registry, monkeypatch):
    assert _run(tmp_path, "--seeds", "2") == 0
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

    target = tmp_path / "toy" / "results.json"
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(lab_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        lab_io.atomic_write_json(target, {"half": "written"})
    assert target.read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_unknown_experiment_exits_2_with_message(tmp_path, toy_registry, capsys):
    assert main(["lab", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment" in err and "nope" in err and "toy" in err
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("bad", ["0", "-3", "abc"])
def test_bad_seeds_exits_2(tmp_path, toy_registry, capsys, bad):
    assert main(["lab", "toy", "--seeds", bad, "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not CALLS


def test_default_suite_runs_default_experiments_in_quick_mode(tmp_path, toy_registry):
    hidden = Experiment(name="hidden", title="not default", metric="m", claim="c", methods=["x"],
                        run_seed=lambda ctx: SeedResult({"x": 1.0}), judge=lambda s: True, default=False)
    toy_registry["hidden"] = hidden
    assert main(["lab", "--out", str(tmp_path), "--no-progress", "--no-plots"]) == 0
    assert (tmp_path / "toy" / "cells" / f"quick-seed{SEED_BASE + 1}.json").is_file()  # quick: 2 seeds
    assert not (tmp_path / "hidden").exists()


def test_claim_that_fails_is_reported_false(tmp_path, toy_registry):
    toy_registry["toy"] = _make_toy(judge=lambda stats: stats["a"].mean > stats["b"].mean)
    assert _run(tmp_path, "--tiny") == 0
    res = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert res["claim_holds"] is False and res["mode"] == "tiny" and res["seeds"] == 1
    assert res["results"]["a"]["std"] == 0.0


def test_judge_that_raises_keeps_the_numbers_and_says_false(tmp_path, toy_registry):
    toy_registry["toy"] = _make_toy(judge=lambda stats: stats["missing"].mean > 0)
    assert _run(tmp_path, "--seeds", "1") == 0
    res = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert res["claim_holds"] is False and "KeyError" in res["judge_error"]
    assert len(res["results"]["a"]["values"]) == 1


def test_list_prints_registered_experiments(toy_registry, capsys):
    assert main(["lab", "--list"]) == 0
    assert "toy" in capsys.readouterr().out
    assert not CALLS


def test_run_experiment_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'mode'"):
        run_experiment(TOY, out=tmp_path, mode="huge", log=lambda *a: None)
    with pytest.raises(ValueError, match="'seeds'"):
        run_experiment(TOY, out=tmp_path, seeds=0, log=lambda *a: None)


def test_method_stats():
    s = MethodStats([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert MethodStats([3.0]).std == 0.0


# ------------------------------------------------------------------ torchrun-style launch (2 ranks, gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    experiments_pkg.registry = lambda strict=False: {"toy": TOY}  # type: ignore[assignment]
    code = main(["lab", "toy", "--out", out, "--seeds", "3", "--no-progress", "--no-plots"])
    if code != 0:
        raise SystemExit(code)


@pytest.mark.ddp
def test_torchrun_style_launch_splits_seeds_and_matches_single_process(tmp_path, toy_registry, monkeypatch):
    import torch.multiprocessing as mp

    # Spawned children unpickle _ddp_worker by module name ('tests.lab.test_framework' under
    # --import-mode=importlib): put the repository root on the sys.path they inherit.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    ddp_out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(ddp_out)), nprocs=2, join=True)
    res = json.loads((ddp_out / "toy" / "results.json").read_text())
    assert res["seeds"] == 3
    assert len({info["pid"] for info in res["info"]}) == 2  # both ranks trained seeds
    assert [info["seed"] for info in res["info"]] == [SEED_BASE + k for k in range(3)]

    single_out = tmp_path / "single"
    assert main(["lab", "toy", "--out", str(single_out), "--seeds", "3", "--no-progress", "--no-plots"]) == 0
    single = json.loads((single_out / "toy" / "results.json").read_text())
    assert res["results"] == single["results"]
    assert (ddp_out / "index.html").is_file()
    assert not [p for p in ddp_out.rglob("*") if p.name.endswith(".tmp")]


def test_clearly_above_uses_the_paired_ci() -> None:
    from trainwell.compare.stats import paired_bootstrap_ci
    from trainwell.lab.base import MethodStats

    # +0.02 on both seeds: the paired CI is [0.02, 0.02] although each method's std is 0.028
    assert MethodStats([0.72, 0.76]).clearly_above(MethodStats([0.70, 0.74]))
    # a higher mean but a loss on one seed: the CI of the differences covers 0
    assert not MethodStats([0.75, 0.73]).clearly_above(MethodStats([0.70, 0.74]))
    assert not MethodStats([0.8]).clearly_above(MethodStats([0.7]))  # one seed: nothing established
    assert not MethodStats([0.7, 0.7]).clearly_above(MethodStats([0.7, 0.7]))
    # lower is better: the CI must lie below 0
    assert MethodStats([0.5, 0.6, 0.4]).clearly_above(MethodStats([0.6, 0.7, 0.5]), higher_is_better=False)
    assert not MethodStats([0.5, 0.6, 0.4]).clearly_above(MethodStats([0.6, 0.7, 0.5]))
    # the CI is the one trainwell compare reports
    a, b = MethodStats([0.71, 0.74, 0.69, 0.75, 0.72]), MethodStats([0.70, 0.72, 0.70, 0.73, 0.70])
    mean, lo, hi = a.paired_ci(b)
    assert (lo, hi) == paired_bootstrap_ci([x - y for x, y in zip(a.values, b.values)])
    assert abs(mean - 0.012) < 1e-12
    assert a.clearly_above(b) == (lo > 0)
