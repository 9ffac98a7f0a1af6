"""The result of a comparison: paired effects, every cell, a Markdown table and an HTML report.

The HTML report is one self-contained file: a forest plot (inline SVG) of each technique's mean paired
difference with its 95% CI and the per-seed differences as dots, the effects and cost table, the failed
cells with their tracebacks, and the configuration that reproduces the run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwell.compare.stats import holm, paired_bootstrap_ci, sign_flip_p_value, verdict

__all__ = ["CompareResult", "compute_effects"]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


def compute_effects(runs: Sequence[dict[str, Any]], labels: Sequence[str], baseline: str, metric: str,
                    higher_is_better: bool, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One effect dict per technique (not the baseline), over the seeds where both cells succeeded."""
    ok = {(r["technique"], int(r["seed"])): r for r in runs if r.get("status") == "ok"}
    effects: list[dict[str, Any]] = []
    for label in labels:
        if label == baseline:
            continue
        paired = [s for s in seeds if (label, s) in ok and (baseline, s) in ok]
        b = [ok[(baseline, s)]["metrics"][metric] for s in paired]
        t = [ok[(label, s)]["metrics"][metric] for s in paired]
        d = [x - y for x, y in zip(t, b)]
        e: dict[str, Any] = {"technique": label, "metric": metric, "n_seeds": len(paired), "seeds": paired,
                             "diffs": d, "baseline_mean": _mean(b), "mean": _mean(t), "diff": _mean(d)}
        if len(d) >= 2:
            e["ci_low"], e["ci_high"] = paired_bootstrap_ci(d)
            e["p_value"] = sign_flip_p_value(d)
        else:
            e["ci_low"] = e["ci_high"] = e["p_value"] = math.nan
        e["verdict"] = (
            verdict(e["ci_low"], e["ci_high"], higher_is_better) if len(d) >= 2 else "not enough seeds"
        )
        tb = _mean([ok[(baseline, s)]["train_seconds"] for s in paired])
        tt = _mean([ok[(label, s)]["train_seconds"] for s in paired])
        mb = _mean([ok[(baseline, s)]["peak_memory_bytes"] for s in paired])
        mt = _mean([ok[(label, s)]["peak_memory_bytes"] for s in paired])
        e["time_ratio"] = _ratio(tt, tb)
        e["peak_memory_ratio"] = _ratio(mt, mb)
        effects.append(e)
    valid = [i for i, e in enumerate(effects) if not math.isnan(e["p_value"])]
    adj = holm([effects[i]["p_value"] for i in valid]) if valid else []
    for e in effects:
        e["p_adjusted"] = math.nan
    for i, a in zip(valid, adj):
        effects[i]["p_adjusted"] = a
    return effects


def _f(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return format(x, spec)


@dataclass
class CompareResult:
    """What :func:`~trainwell.compare.compare` returns.

    Attributes:
        effects: one dict per technique: ``technique``, ``metric``, ``baseline_mean``, ``mean``, ``diff``,
            ``ci_low``, ``ci_high``, ``p_value``, ``p_adjusted``, ``verdict``, ``time_ratio``,
            ``peak_memory_ratio``, plus ``n_seeds``, ``seeds`` and the per-seed ``diffs``.
        runs: every cell (``technique``, ``seed``, ``status``, ``metrics``, ``train_seconds``,
            ``peak_memory_bytes``, ``losses``, ``error`` on failure, ``cached`` when read from the cache).
        metric / baseline / seeds / techniques / higher_is_better: the comparison's settings.
        config: the configuration that reproduces the run.
        task: the task's identity (cache key part).
    """

    effects: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    metric: str
    baseline: str
    seeds: list[int]
    techniques: list[str]
    higher_is_better: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    task: str = ""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The failed cells (with their tracebacks in ``error``)."""
        return [r for r in self.runs if r.get("status") != "ok"]

    def effect(self, technique: str) -> dict[str, Any]:
        """The effect dict of ``technique`` (its label)."""
        for e in self.effects:
            if e["technique"] == technique:
                return e
        raise KeyError(f"CompareResult.effect(): no technique {technique!r}; have "
                       + ", ".join(e["technique"] for e in self.effects))

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": self.baseline, "seeds": self.seeds,
                "techniques": self.techniques, "higher_is_better": self.higher_is_better,
                "effects": self.effects, "runs": self.runs, "config": self.config, "task": self.task}

    def baseline_stats(self) -> tuple[float, float, int]:
        vals = [r["metrics"][self.metric] for r in self.runs
                if r["technique"] == self.baseline and r.get("status") == "ok"]
        m = _mean(vals)
        sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
        return m, sd, len(vals)

    def to_markdown(self) -> str:
        """The effects table (one row per technique) with cost ratios, then failed cells if any."""
        m, sd, n = self.baseline_stats()
        better = "higher" if self.higher_is_better else "lower"
        lines = [
            f"Metric `{self.metric}` ({better} is better), baseline `{self.baseline}`: {_f(m)} ± {_f(sd)} "
            f"over {n} seed{'s' if n != 1 else ''}. Δ = mean paired difference (technique − baseline); "
            "95% bootstrap CI (10,000 resamples); p = exact sign-flip test, Holm-adjusted over techniques.",
            "",
            "| technique | mean | Δ | 95% CI | p | p (Holm) | verdict | time × | memory × | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in self.effects:
            lines.append(
                f"| {e['technique']} | {_f(e['mean'])} | {_f(e['diff'], '+.4f')} | "
                f"[{_f(e['ci_low'], '+.4f')}, {_f(e['ci_high'], '+.4f')}] | {_f(e['p_value'], '.3f')} | "
                f"{_f(e['p_adjusted'], '.3f')} | {e['verdict']} | {_f(e['time_ratio'], '.2f')} | "
                f"{_f(e['peak_memory_ratio'], '.2f')} | {e['n_seeds']} |")
        if self.seeds:
            lines += [
                "",
                f"With {len(self.seeds)} seeds the smallest possible two-sided p is "
                f"{2 / 2 ** len(self.seeds):.3g}; the verdict comes from the CI, which with few seeds is "
                "optimistic (the percentile bootstrap undercovers): read it with p (Holm).",
            ]
        if self.errors:
            lines += ["", f"{len(self.errors)} cell(s) failed:"]
            lines += [
                f"- `{r['technique']}` seed {r['seed']}: {r.get('error_summary', 'error')}"
                for r in self.errors
            ]
        return "\n".join(lines) + "\n"

    def _forest_svg(self) -> str:
        es = self.effects
        rows = max(1, len(es))
        w, left, right, top, rh = 760, 190, 30, 30, 30
        h = top + rows * rh + 40
        vals = [0.0]
        for e in es:
            vals += [x for x in (e["ci_low"], e["ci_high"], *e["diffs"]) if not math.isnan(x)]
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.08 or 1e-3
        lo, hi = lo - pad, hi + pad

        def x(v: float) -> float:
            return left + (v - lo) / (hi - lo) * (w - left - right)

        esc = html.escape
        parts = [
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' "
            "font-size='12'>",
            f"<line x1='{x(0):.1f}' y1='{top - 10}' x2='{x(0):.1f}' y2='{top + rows * rh}' stroke='#888' "
            "stroke-dasharray='4 3'/>",
        ]
        colors = {"helps": "#1a7f37", "hurts": "#c0392b"}
        for i, e in enumerate(es):
            y = top + i * rh + rh / 2
            c = colors.get(e["verdict"], "#4c78a8")
            parts.append(
                f"<text x='{left - 8}' y='{y + 4:.1f}' text-anchor='end'>{esc(e['technique'])}</text>"
            )
            if not math.isnan(e["ci_low"]):
                parts.append(f"<line x1='{x(e['ci_low']):.1f}' y1='{y:.1f}' x2='{x(e['ci_high']):.1f}' "
                             f"y2='{y:.1f}' stroke='{c}' stroke-width='2.5'/>")
            for d in e["diffs"]:
                parts.append(f"<circle cx='{x(d):.1f}' cy='{y + 7:.1f}' r='2.5' fill='#333' opacity='0.7'/>")
            if not math.isnan(e["diff"]):
                parts.append(
                    f"<rect x='{x(e['diff']) - 4:.1f}' y='{y - 4:.1f}' width='8' height='8' "
                    f"fill='{c}'><title>{esc(e['technique'])}: Δ {e['diff']:+.4g} [{e['ci_low']:+.4g}, "
                    f"{e['ci_high']:+.4g}]</title></rect>"
                )
        ya = top + rows * rh + 8
        parts.append(f"<line x1='{left}' y1='{ya}' x2='{w - right}' y2='{ya}' stroke='#333'/>")
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            parts.append(f"<line x1='{x(v):.1f}' y1='{ya}' x2='{x(v):.1f}' y2='{ya + 4}' stroke='#333'/>")
            parts.append(f"<text x='{x(v):.1f}' y='{ya + 17}' text-anchor='middle'>{v:+.3g}</text>")
        parts.append(f"<text x='{(left + w - right) / 2:.0f}' y='{ya + 32}' text-anchor='middle'>"
                     f"Δ {esc(self.metric)} vs {esc(self.baseline)} (square: mean, bar: 95% CI, dots: seeds)"
                     "</text></svg>")
        return "".join(parts)

    def to_html(self) -> str:
        """The report page (self-contained)."""
        esc = html.escape
        m, sd, n = self.baseline_stats()
        rows = []
        for e in self.effects:
            cls = {"helps": "yes", "hurts": "no"}.get(e["verdict"], "")
            rows.append(
                f"<tr><td>{esc(e['technique'])}</td><td>{_f(e['mean'])}</td><td>{_f(e['diff'], '+.4f')}</td>"
                f"<td>[{_f(e['ci_low'], '+.4f')}, "
                f"{_f(e['ci_high'], '+.4f')}]</td><td>{_f(e['p_value'], '.3f')}</td>"
                f"<td>{_f(e['p_adjusted'], '.3f')}</td><td class='{cls}'>{esc(e['verdict'])}</td>"
                f"<td>{_f(e['time_ratio'], '.2f')}</td><td>{_f(e['peak_memory_ratio'], '.2f')}</td>"
                f"<td>{e['n_seeds']}</td></tr>"
            )
        cost = []
        for label in self.techniques:
            cs = [r for r in self.runs if r["technique"] == label and r.get("status") == "ok"]
            cost.append(
                f"<tr><td>{esc(label)}</td><td>{_f(_mean([r['train_seconds'] for r in cs]), '.3f')}</td>"
                f"<td>{_f(_mean([r['peak_memory_bytes'] / 2**20 for r in cs]), '.2f')}</td>"
                f"<td>{len(cs)}</td></tr>"
            )
        errs = "".join(
            f"<details><summary>{esc(r['technique'])} seed {r['seed']}: "
            f"{esc(str(r.get('error_summary', 'error')))}</summary><pre>{esc(str(r.get('error', '')))}"
            "</pre></details>"
            for r in self.errors
        )
        per_seed = ["<tr><th>technique</th>" + "".join(f"<th>seed {s}</th>" for s in self.seeds) + "</tr>"]
        by = {(r["technique"], int(r["seed"])): r for r in self.runs}
        for label in self.techniques:
            cells = []
            for s in self.seeds:
                r = by.get((label, s))
                ok = r is not None and r.get("status") == "ok"
                cells.append(
                    f"<td>{_f(r['metrics'][self.metric]) if ok and r else 'failed' if r else '—'}</td>"
                )
            per_seed.append(f"<tr><td>{esc(label)}</td>{''.join(cells)}</tr>")
        cfg = json.dumps(self.config, indent=2, default=str)
        return "\n".join(
            [
                "<!doctype html><html><head><meta charset='utf-8'><title>trainwell compare</title>",
                "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                "text-align:left}.yes{color:#1a7f37;font-weight:bold}.no{color:#c0392b;font-weight:bold}"
                "pre{background:#f6f8fa;padding:.6em;overflow:auto}</style></head><body>",
                "<h1>trainwell compare</h1>",
                f"<p>Metric <b>{esc(self.metric)}</b> ({'higher' if self.higher_is_better else 'lower'} is "
                f"better); baseline <b>{esc(self.baseline)}</b>: {_f(m)} ± {_f(sd)} over {n} seeds. Each "
                "seed gives every technique the same initial weights and data order; Δ is the mean of the "
                "per-seed differences, the CI a 95% percentile bootstrap (10,000 seeded resamples), p the "
                "exact sign-flip permutation test, Holm-adjusted over the techniques. Verdict: the CI "
                "excludes 0.</p>",
                self._forest_svg(),
                "<h2>Effects</h2><table><tr><th>technique</th><th>mean</th><th>Δ</th><th>95% "
                "CI</th><th>p</th><th>p (Holm)</th><th>verdict</th><th>time ×</th><th>memory "
                "×</th><th>seeds</th></tr>",
                *rows,
                "</table>",
                "<h2>Cost</h2><table><tr><th>technique</th><th>train seconds (mean)</th><th>peak memory MiB "
                "(mean)</th><th>cells ok</th></tr>",
                *cost,
                "</table>",
                "<p>Peak memory: the CUDA allocator's peak on GPU; on CPU the bytes autograd saves for "
                "backward in the first steps plus parameters, gradients and optimizer state.</p>",
                "<h2>Per seed</h2><table>",
                *per_seed,
                "</table>",
                ("<h2>Failed cells</h2>" + errs) if errs else "",
                "<h2>Configuration</h2><pre>" + esc(cfg) + "</pre>",
                "</body></html>",
            ]
        )

    def save_html(self, path: str | Path) -> Path:
        """Write :meth:`to_html` to ``path`` atomically (folders created); returns the path."""
        from trainwell.lab.io import atomic_write_text

        p = Path(path)
        atomic_write_text(p, self.to_html())
        return p
