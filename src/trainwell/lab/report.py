"""Writes ``reports/index.html`` and ``reports/results.md`` from every ``*/results.json`` in a folder."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from trainwell.lab.io import atomic_write_text, read_json

__all__ = ["claims_summary", "collect", "fmt_stats", "fmt_time", "paired_ci_cell", "paired_ci_header",
           "results_markdown", "seeds_phrase", "summary_table", "verdict_word", "write_index"]


def collect(out: Path) -> list[dict[str, Any]]:
    """Every readable ``<out>/*/results.json``, sorted by experiment folder name."""
    found = []
    for p in sorted(Path(out).glob("*/results.json")):
        try:
            r = read_json(p)
        except (OSError, ValueError):
            continue
        if isinstance(r, dict) and {"experiment", "metric", "results", "claim", "claim_holds"} <= set(r):
            r.setdefault("_dir", p.parent.name)  # links point at the folder actually on disk
            found.append(r)
    return found


def fmt_stats(s: dict[str, Any]) -> str:
    """``mean ± std`` over seeds; one seed shows its value alone (its spread is unknown, not 0)."""
    if len(s.get("values", ())) <= 1:
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def paired_ci_header(r: dict[str, Any]) -> str:
    """Column title of :func:`paired_ci_cell`: the paired difference to the experiment's first method."""
    first = next(iter(r["results"]), "?")
    return f"Δ vs {first} [95% paired CI]"


def paired_ci_cell(r: dict[str, Any], method: str) -> str:
    """``"+0.0110 [+0.0040, +0.0180]"``: mean per-seed difference of ``method`` to the first method with its
    95% paired bootstrap CI (:meth:`~trainwell.lab.base.MethodStats.paired_ci`, the judges' statistic)."""
    from trainwell.lab.base import MethodStats

    ref = next(iter(r["results"]), None)
    if ref is None or method == ref:
        return "—"
    mean, lo, hi = MethodStats(list(r["results"][method]["values"])).paired_ci(
        MethodStats(list(r["results"][ref]["values"])))
    if lo != lo:  # NaN: fewer than 2 paired seeds
        return f"{mean:+.4f} (1 seed: no CI)" if mean == mean else "—"
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


_fmt = fmt_stats


def seeds_phrase(n: Any) -> str:
    """``"1 seed"``, ``"3 seeds"`` (``"? seeds"`` when unknown)."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def fmt_time(seconds: Any) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"1.2 h"``; ``"?"`` when unknown."""
    if not isinstance(seconds, (int, float)) or seconds != seconds:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _judged(r: dict[str, Any]) -> bool:
    return bool(r.get("judged", r.get("mode") != "tiny"))


def verdict_word(r: dict[str, Any]) -> str:
    """``"yes"``, ``"no"`` or ``"not judged"`` (tiny mode proves the pipeline only)."""
    if not _judged(r):
        return "not judged (tiny mode)"
    return "yes" if r["claim_holds"] else "no"


def _runtime(r: dict[str, Any]) -> str:
    """What the numbers cost: the summed compute time of all cells (cached ones included)."""
    compute = r.get("compute_s")
    if isinstance(compute, (int, float)):
        return f"{fmt_time(compute)} of compute"
    return f"{fmt_time(r.get('runtime_s'))} wall (this run)"


def summary_table(results: list[dict[str, Any]]) -> str:
    """Plain-text table for the terminal: one line per (experiment, method)."""
    rows = [("experiment", "method", "metric", "mean ± std", "seeds", "claim holds")]
    for r in results:
        first = True
        verdict = ("yes" if r["claim_holds"] else "NO") if _judged(r) else "not judged"
        for m, s in r["results"].items():
            rows.append((r["experiment"] if first else "", m, r["metric"] if first else "", _fmt(s),
                         str(len(s["values"])), verdict if first else ""))
            first = False
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def claims_summary(results: list[dict[str, Any]]) -> str:
    """One paragraph per experiment: the claim checked and whether it held on this run."""
    out = []
    for r in results:
        if not _judged(r):
            verdict = "not judged (tiny mode proves the pipeline only)"
        else:
            verdict = "HOLDS" if r["claim_holds"] else "does NOT hold"
        out.append(f"{r['experiment']} [{r.get('mode', '?')}, {seeds_phrase(r.get('seeds', '?'))}]: "
                   f"claim {verdict} — {r['claim']}")
        if r.get("reported"):
            out.append(f"    reported: {r['reported']}")
    return "\n".join(out)


def results_markdown(results: list[dict[str, Any]]) -> str:
    out = ["# trainwell lab results", ""]
    for r in results:
        out += [f"## {r.get('title', r['experiment'])} (`{r['experiment']}`)", "",
                f"{r.get('mode', '?')} mode, {seeds_phrase(r.get('seeds', '?'))}, {_runtime(r)}. "
                f"Metric: {r['metric']}.", ""]
        head = "| method | mean ± std |" if r.get("seeds") != 1 else "| method | value (1 seed) |"
        out += [f"{head} {paired_ci_header(r)} |", "|---|---|---|"]
        out += [f"| {m} | {_fmt(s)} | {paired_ci_cell(r, m)} |" for m, s in r["results"].items()]
        if _judged(r):
            word = "holds" if r["claim_holds"] else "does not hold"
            out += ["", f"Claim: {r['claim']} — **{word}** on this run."]
        else:
            out += ["", f"Claim: {r['claim']} — **not judged** (tiny mode proves the pipeline only)."]
        if r.get("reported"):
            out += ["", f"Reported: {r['reported']}"]
        out.append("")
    return "\n".join(out)


def write_index(out: Path) -> Path:
    """Write ``<out>/index.html`` (links to each experiment's table, results.json, plots) and results.md."""
    out = Path(out)
    results = collect(out)
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trainwell lab</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px "
        "8px;text-align:left}"
        ".yes{color:#1a7f37;font-weight:bold}.no{color:#c0392b;font-weight:bold}.nj{color:#777}"
        "img{max-width:100%;margin:4px 0}"
        "section{border-top:1px solid #ddd;margin-top:1.5em}</style></head><body>",
        "<h1>trainwell lab</h1>",
        "<p>Each experiment checks a claim from its source post or paper on real data. "
        "Numbers are mean ± std over seeds.</p>",
        "<table><tr><th>experiment</th><th>metric</th><th>mode</th><th>seeds</th><th>claim holds</th></tr>",
    ]
    for r in results:
        cls = ("yes" if r["claim_holds"] else "no") if _judged(r) else "nj"
        parts.append(
            f"<tr><td><a href='#{e(r['experiment'])}'>{e(r['experiment'])}</a></td><td>{e(r['metric'])}</td>"
            f"<td>{e(str(r.get('mode', '?')))}</td><td>{e(str(r.get('seeds', '?')))}</td>"
            f"<td class='{cls}'>{e(verdict_word(r))}</td></tr>"
        )
    parts.append("</table>")
    for r in results:
        name = r["experiment"]
        folder = e(r.get("_dir", name))
        parts.append(f"<section id='{e(name)}'><h2>{e(r.get('title', name))} <small>({e(name)})</small></h2>")
        if _judged(r):
            cls = "yes" if r["claim_holds"] else "no"
            parts.append(f"<p><b>Claim:</b> {e(r['claim'])} — <span class='{cls}'>"
                         f"{'holds' if r['claim_holds'] else 'does not hold'}</span> on this run.</p>")
        else:
            parts.append(f"<p><b>Claim:</b> {e(r['claim'])} — <span class='nj'>not judged</span> "
                         "(tiny mode proves the pipeline only).</p>")
        parts.append(f"<p>{e(str(r.get('mode', '?')))} mode, {e(seeds_phrase(r.get('seeds', '?')))}, "
                     f"{e(_runtime(r))}.</p>")
        if r.get("reported"):
            parts.append(f"<p><b>Reported:</b> {e(r['reported'])}</p>")
        secondary = r.get("secondary", {})
        sec = list(secondary)
        parts.append("<table><tr><th>method</th><th>" + e(r["metric"]) + "</th>"
                     + f"<th>{e(paired_ci_header(r))}</th>"
                     + "".join(f"<th>{e(k)}</th>" for k in sec) + "</tr>")
        for m, s in r["results"].items():
            cells = "".join(
                f"<td>{_fmt(secondary[k][m])}</td>" if m in secondary[k] else "<td>—</td>" for k in sec
            )
            parts.append(
                f"<tr><td>{e(m)}</td><td>{_fmt(s)}</td><td>{e(paired_ci_cell(r, m))}</td>{cells}</tr>"
            )
        parts.append("</table>")
        for png in r.get("plots", []):
            parts.append(f"<img src='{folder}/{e(png)}' alt='{e(png)}'>")
        parts.append(
            f"<p><a href='{folder}/table.md'>table.md</a> · <a href='{folder}/results.json'>results.json</a>"
            + (f" · source: {e(r['source'])}" if r.get("source") else "")
            + "</p></section>"
        )
    parts.append("</body></html>")
    atomic_write_text(out / "index.html", "\n".join(parts))
    atomic_write_text(out / "results.md", results_markdown(results))
    return out / "index.html"
