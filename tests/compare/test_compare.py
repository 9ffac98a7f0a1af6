"""compare(): the paired design, verdicts, resume after a killed worker, backends agree, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.compare._tasks import (
    FAILS,
    KILLER,
    SHUFFLED,
    X,
    Y,
    evaluate,
    make_model,
    make_tagged_task,
    make_task,
)

from trainwell.compare import CompareResult, Task, compare
from trainwell.compare.report import compute_effects


def _table(r: CompareResult) -> list[tuple[str, int, dict[str, float]]]:
    return sorted((c["technique"], c["seed"], c["metrics"]) for c in r.runs)


def test_noop_technique_gives_exactly_zero_on_every_seed() -> None:
    r = compare(make_task(epochs=1), ["flooding:level=0"], seeds=3, workers=0, progress=False)
    e = r.effect("flooding:level=0")
    assert e["diffs"] == [0.0, 0.0, 0.0]
    assert (e["diff"], e["ci_low"], e["ci_high"], e["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert e["verdict"] == "no detectable difference"
    # same initial weights and batches: the whole training-loss curve is the same
    losses = {(c["technique"], c["seed"]): c["losses"] for c in r.runs}
    assert all(losses[("flooding:level=0", s)] == losses[("baseline", s)] for s in range(3))


def test_shuffled_labels_hurt_and_costs_are_reported(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    r = compare(make_task(), [SHUFFLED], seeds=3, metric="accuracy", workers=0,
                progress=lambda cell, done, total: seen.append((cell["technique"], done)))
    assert len(seen) == 6 and seen[-1][1] == 6
    e = r.effect("shuffled_labels")
    assert r.baseline_stats()[0] > 0.75  # the baseline learns the task
    assert e["verdict"] == "hurts" and e["ci_high"] < 0 and e["diff"] < -0.1
    assert e["p_adjusted"] >= e["p_value"]
    for key in ("technique", "metric", "baseline_mean", "mean", "diff", "ci_low", "ci_high", "p_value",
                "p_adjusted", "verdict", "time_ratio", "peak_memory_ratio"):
        assert key in e
    assert e["peak_memory_ratio"] == pytest.approx(1.0, rel=0.05)  # same graph as the baseline
    md = r.to_markdown()
    assert "| shuffled_labels |" in md and "hurts" in md and "95% CI" in md
    html = r.save_html(tmp_path / "r" / "index.html").read_text()
    assert "<svg" in html and "shuffled_labels" in html and "Configuration" in html
    # a lower-is-better metric flips the direction of the verdict
    by_loss = compute_effects(r.runs, r.techniques, "baseline", "loss", False, r.seeds)
    assert by_loss[0]["diff"] > 0 and by_loss[0]["verdict"] == "hurts"


def test_memory_ratio_sees_a_doubled_batch() -> None:
    # R-Drop runs one forward on the doubled batch: it saves about twice the activations
    r = compare(make_task(epochs=1), ["rdrop"], seeds=2, workers=0, progress=False)
    assert r.effect("rdrop")["peak_memory_ratio"] > 1.2


def test_failing_cell_is_recorded_and_the_rest_go_on() -> None:
    r = compare(make_tagged_task(), [FAILS], seeds=3, workers=0, progress=False)
    assert [(c["technique"], c["seed"]) for c in r.errors] == [("fails_on_seed_1", 1)]
    assert "boom on seed 1" in r.errors[0]["error"] and "Traceback" in r.errors[0]["error"]
    assert r.effect("fails_on_seed_1")["n_seeds"] == 2
    assert "failed" in r.to_markdown()


@pytest.mark.slow
def test_resume_after_killed_worker_reruns_only_missing_cells(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "kill"
    marker.write_text("1")
    monkeypatch.setenv("TRAINWELL_TEST_KILL_FILE", str(marker))
    cache = tmp_path / "cache"
    task = make_tagged_task()
    from trainwell.compare.backends import WorkerDied

    # workers=1 runs the cells in order: seed 0 (baseline, killer), then seed 1's baseline; the killer
    # cell of seed 1 kills its worker process
    with pytest.raises(WorkerDied):
        compare(task, [KILLER], seeds=3, workers=1, cache_dir=cache, progress=False)
    finished = {json.loads(p.read_text())["technique"] + f"/{json.loads(p.read_text())['seed']}"
                for p in cache.glob("*.json")}
    assert {"baseline/0", "killer/0", "baseline/1"} <= finished and "killer/1" not in finished
    marker.unlink()
    r = compare(task, [KILLER], seeds=3, workers=2, cache_dir=cache, progress=False)
    rerun = {f"{c['technique']}/{c['seed']}" for c in r.runs if not c.get("cached")}
    assert rerun == {f"{t}/{s}" for t in ("baseline", "killer") for s in range(3)} - finished
    assert not r.errors and len({c["pid"] for c in r.runs if not c.get("cached")}) >= 1
    # the pool, the cache and a fresh in-process run agree exactly
    ref = compare(task, [KILLER], seeds=3, workers=0, progress=False)
    assert _table(r) == _table(ref)
    # a third run finds everything cached
    again = compare(task, [KILLER], seeds=3, workers=0, cache_dir=cache, progress=False)
    assert all(c.get("cached") for c in again.runs)
    assert again.effects == r.effects


def test_bad_configs_raise_clear_errors() -> None:
    task = make_task(epochs=1)
    with pytest.raises(ValueError, match=r"technique.*registered"):
        compare(task, ["fgmm"], workers=0, progress=False)
    with pytest.raises(ValueError, match="known parameter of 'fgm'"):
        compare(task, ["fgm:eps=1"], workers=0, progress=False)
    with pytest.raises(TypeError, match=r"flooding:level.*a number"):
        compare(task, ["flooding:level=high"], workers=0, progress=False)
    with pytest.raises(ValueError, match=r"seeds.*>= 2"):
        compare(task, ["fgm"], seeds=1, workers=0, progress=False)
    with pytest.raises(ValueError, match="backend"):
        compare(task, ["fgm"], backend="slurm", progress=False)
    with pytest.raises(ValueError, match="metric"):
        compare(task, ["flooding"], seeds=2, metric="f1", workers=0, progress=False)
    bad = Task(make_model, (X, Y), lambda m: "great", epochs=1)
    with pytest.raises(TypeError, match=r"evaluate.*float or a dict"):
        compare(bad, ["flooding"], seeds=2, workers=0, progress=False)
    with pytest.raises(TypeError, match=r"task.*picklable"):
        compare(Task(lambda s: make_model(s), (X, Y), evaluate), ["flooding"], seeds=2, workers=1,
                progress=False)
    with pytest.raises(ValueError, match="train_data"):
        Task(make_model, (X, Y[:5]), evaluate)
    with pytest.raises(ValueError, match="epochs"):
        Task(make_model, (X, Y), evaluate, epochs=0)
    with pytest.raises(TypeError, match="evaluate"):
        Task(make_model, (X, Y), None)  # type: ignore[arg-type]


def test_dataset_train_data_and_custom_embedding() -> None:
    from torch.utils.data import TensorDataset

    task = Task(make_model, TensorDataset(X, Y), evaluate, epochs=1, batch_size=32,
                embedding=lambda m: m.embedding)
    r = compare(task, ["fgm"], seeds=2, workers=0, progress=False)
    assert not r.errors and r.effect("fgm")["n_seeds"] == 2
    tup = compare(Task(make_model, (X, Y), evaluate, epochs=1, batch_size=32), ["fgm"], seeds=2, workers=0,
                  progress=False)
    # the Dataset path draws the same batches as the tuple path
    assert _table(r) == _table(tup)
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "expected"),
    [("max 100000\n", 8, 8), ("200000 100000\n", 8, 2), ("150000 100000\n", 8, 1), ("50000 100000\n", 8, 1),
     ("800000 100000\n", 4, 4), (None, 3, 3), ("garbage\n", 6, 6)],
)
def test_cpu_count_honours_a_cgroup_quota(monkeypatch, cpu_max, affinity, expected) -> None:
    """The usable CPUs: the affinity set capped by cgroup v2's cpu.max quota/period (floored, at least 1)."""
    import builtins
    import io
    import os

    from trainwell.compare import backends

    real_open = builtins.open

    def fake_open(path, *a, **k):  # type: ignore[no-untyped-def]
        if str(path) == "/sys/fs/cgroup/cpu.max":
            if cpu_max is None:
                raise FileNotFoundError(path)
            return io.StringIO(cpu_max)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert backends.cpu_count() == expected
