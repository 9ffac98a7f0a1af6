"""The Ray backend against a local Ray instance, and the ``trainwell compare`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.compare._tasks import make_task

from trainwell.compare import compare


@pytest.mark.slow
def test_ray_backend_gives_the_same_table_as_the_local_run(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        task = make_task(epochs=1)
        techs = ["flooding:level=0.5", "fgm:epsilon=0.3"]
        streamed: list[int] = []
        via_ray = compare(task, techs, seeds=2, backend="ray", cache_dir=tmp_path / "c",
                          progress=lambda cell, done, total: streamed.append(done))
        local = compare(task, techs, seeds=2, workers=0, progress=False)
    finally:
        ray.shutdown()
    assert streamed == list(range(1, 7))  # results came back one by one
    key = lambda r: sorted((c["technique"], c["seed"], c["metrics"], c["losses"]) for c in r.runs)  # noqa: E731
    assert key(via_ray) == key(local)
    strip = lambda es: [{k: v for k, v in e.items() if k not in ("time_ratio", "peak_memory_ratio")}  # noqa: E731
                        for e in es]
    assert strip(via_ray.effects) == strip(local.effects)
    assert len(list((tmp_path / "c").glob("*.json"))) == 6


def test_cli_runs_a_config_and_writes_the_report(tmp_path: Path) -> None:
    from trainwell.lab.cli import main

    (tmp_path / "mytask.py").write_text(
        "from tests.compare._tasks import make_task as _mk\n"
        "def make_task(epochs=1):\n    return _mk(epochs=epochs)\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[task]\nfactory = "mytask:make_task"\nargs = { epochs = 1 }\n\n'
        '[compare]\ntechniques = ["flooding:level=0.5,0"]\nseeds = 2\nmetric = "accuracy"\nworkers = 0\n'
        f'out = "{tmp_path / "out"}"\n')
    assert main(["compare", str(cfg), "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["technique"] for e in res["effects"]] == ["flooding:level=0.5", "flooding:level=0"]
    assert res["config"]["task"]["factory"] == "mytask:make_task"
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<svg" in html and "mytask:make_task" in html
    # a second run is served from the cache folder
    assert main(["compare", str(cfg), "--no-progress"]) == 0
    assert all(c.get("cached") for c in json.loads((tmp_path / "out" / "results.json").read_text())["runs"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[task]\nfactory = "mytask"\n[compare]\ntechniques = ["fgm"]\n', "task.factory"),
        ('[task]\nfactory = "m:f"\n[compare]\ntechniques = []\n', "compare.techniques"),
        ('[task]\nfactory = "m:f"\n[compare]\ntechniques = ["fgm"]\nseeds = 1\n', "compare.seeds"),
        ('[task]\nfactory = "m:f"\n[compare]\ntechniques = ["fgm"]\nworkers = "two"\n', "compare.workers"),
        ('[task]\nfactory = "m:f"\n[compare]\ntechniques = ["fgm"]\nsedes = 3\n', "compare.sedes"),
        ('[task]\nfactory = "no_such_module_xyz:f"\n[compare]\ntechniques = ["fgm"]\n', "task.factory"),
        (
            "[task]\nfactory = \"__import__('os').system('x'):f\"\n[compare]\ntechniques = [\"fgm\"]\n",
            "task.factory",
        ),
        ("task = 3 +\n", "TOML"),
    ],
)
def test_cli_bad_configs_name_the_field(tmp_path: Path, capsys, body: str, field: str) -> None:
    from trainwell.lab.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["compare", str(cfg)]) == 2
    assert field in capsys.readouterr().err
