"""The HTML report: the terminal table, SLO verdicts and two plots embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import orjson

from loadtest.errors import UsageError
from loadtest.report import render_table
from loadtest.stats import Stats, percentiles

# Percentiles for the distribution plot: 0%, 68%, 90%, ... up to 99.999%, evenly on a log
# scale of 1 / (1 - p), the usual HdrHistogram view where the tail gets most of the width.
_DIST_POINTS = [100.0 * (1 - 10 ** (-k / 20)) for k in range(0, 101)]


def write_html(report: dict[str, Any], stats: Stats, path: Path) -> None:
    images = [_png(_timeline_figure(report)), _png(_distribution_figure(stats))]
    body = _page(report, images)
    try:
        path.write_text(body, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write HTML report {path}: {exc.strerror}") from exc


def _figure() -> Any:
    # The object API with no pyplot: no global backend state, renders with Agg.
    from matplotlib.figure import Figure

    return Figure(figsize=(9, 4.2), dpi=100, layout="constrained")


def _timeline_figure(report: dict[str, Any]) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    for cls, points in report["timeline"].items():
        t = [p["t_s"] for p in points]
        (line,) = ax.plot(t, [p["p99_us"] / 1000 for p in points], label=f"{cls} p99")
        ax.plot(t, [p["p50_us"] / 1000 for p in points], ls="--", color=line.get_color(),
                label=f"{cls} p50")
    ax.set_yscale("log")
    ax.set_xlabel("time since start (s, by intended send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time")
    ax.grid(True, which="both", alpha=0.3)
    if report["timeline"]:
        ax.legend(fontsize="small")
    return fig


def _distribution_figure(stats: Stats) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    for cls, hist in sorted(stats.latency.items()):
        xs = [1 / (1 - p / 100) for p in _DIST_POINTS]
        ys = [v / 1000 for v in percentiles(hist, _DIST_POINTS)]
        ax.plot(xs, ys, label=cls)
    ax.set_xscale("log")
    ticks = [50, 90, 99, 99.9, 99.99, 99.999]
    ax.set_xticks([1 / (1 - t / 100) for t in ticks], [f"{t:g}%" for t in ticks])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency by percentile")
    ax.grid(True, which="both", alpha=0.3)
    if stats.latency:
        ax.legend(fontsize="small")
    return fig


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _page(report: dict[str, Any], images: list[str]) -> str:
    settings = html.escape(orjson.dumps(report["settings"], option=orjson.OPT_INDENT_2).decode())
    imgs = "\n".join(f'<img alt="plot" src="data:image/png;base64,{b64}">' for b64 in images)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loadtest report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto}} img{{max-width:100%}}
.pass{{color:#070}} .fail,.invalid{{color:#b00}}</style></head>
<body>
<h1>loadtest report <span class="{report['verdict']}">{report['verdict'].upper()}</span></h1>
<p>{html.escape(report['created_at'])}</p>
<h2>Percentiles</h2>
<pre>{html.escape(render_table(report))}</pre>
<h2>Plots</h2>
{imgs}
<h2>Settings</h2>
<pre>{settings}</pre>
</body></html>
"""
