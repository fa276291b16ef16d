"""What a run leaves behind: the JSON report, a chart a person would rather look at, and the
table the command prints.

The chart is one self-contained HTML file with inline SVG bars: it opens in any browser,
from disk or as a CI artifact, and needs no plotting library (matplotlib would add ~40 MB
to the extra for six bars). Neither file carries a clock reading, so one seed and one input
give byte-identical files.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

FORMAT = 1  # bump when the JSON's shape changes
METRICS = {"auc_roc": "AUC ROC", "average_precision": "average precision",
           "card_precision_top_k": "card precision@{k}"}
COLORS = ("#3b6fb6", "#e08a2c", "#4c9a5b", "#b0463c", "#7d5ba6", "#8c8c8c")


def metric_title(metric: str, k: int) -> str:
    return METRICS[metric].format(k=k)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def chart_path(report_path: Path) -> Path:
    return report_path.with_suffix(".html")


def results_by(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["feature_set"], r["model"]): r for r in report["results"]}


def table(report: dict) -> list[str]:
    """One row per model and measure, one column per feature set, and the difference of
    each later set from the first."""
    sets = [s["name"] for s in report["feature_sets"]]
    k = report["top_k"]
    results = results_by(report)
    lines = [f"  {s['name']} = {s['spec']} ({len(s['features'])} features)"
             for s in report["feature_sets"]]
    head = f"  {'model':<7}{'measure':<22}" + "".join(f"{n:>9}" for n in sets)
    head += "".join(f"{n + '-' + sets[0]:>9}" for n in sets[1:])
    lines += ["", head]
    for model in report["models"]:
        for metric in METRICS:
            values = [results[(n, model)][metric] for n in sets]
            row = f"  {model:<7}{metric_title(metric, k):<22}"
            row += "".join(f"{_num(v):>9}" for v in values)
            row += "".join(f"{_signed(v - values[0]):>9}" for v in values[1:])
            lines.append(row)
    return lines


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.4f}"


def write_chart(report: dict, path: Path) -> None:
    """Three bar panels (one per measure), bars grouped by model, one colour per feature
    set, each bar labelled with its value; the protocol and the sets written above."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k = report["top_k"]
    sets = report["feature_sets"]
    results = results_by(report)
    p = report["protocol"]
    legend = "".join(
        f'<li><span class="sw" style="background:{COLORS[i % len(COLORS)]}"></span>'
        f'<b>{html.escape(s["name"])}</b> {html.escape(s["spec"])} '
        f'({len(s["features"])} features)</li>' for i, s in enumerate(sets))
    # card precision cannot pass (fraudulent cards that day) / k: drawn, so that a low bar
    # reads as "near the best possible" when it is
    fraud_cards = [d["fraud_cards"] for d in p["test"]["days"]]
    ceiling = sum(min(c, k) for c in fraud_cards) / (k * len(fraud_cards)) if fraud_cards \
        else None
    panels = "".join(_panel(metric_title(m, k), m, report["models"], sets, results,
                            ceiling if m == "card_precision_top_k" else None)
                     for m in METRICS)
    days = "".join(f"<th>{html.escape(d['date'])}</th>" for d in p["test"]["days"])
    per_day = "<tr><td colspan=2>fraudulent cards</td>" + "".join(
        f"<td>{d['fraud_cards']}</td>" for d in p["test"]["days"]) + "</tr>"
    per_day += "".join(
        f"<tr><td>{html.escape(r['feature_set'])}</td><td>{html.escape(r['model'])}</td>"
        + "".join(f"<td>{v:.2f}</td>" for v in r["card_precision_per_day"]) + "</tr>"
        for r in report["results"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ffs evaluate</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} p {{ margin: 4px 0; color: #555; }}
ul {{ list-style: none; padding: 0; }} li {{ margin: 2px 0; }}
.sw {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; }}
.panels {{ display: flex; flex-wrap: wrap; gap: 16px; }}
table {{ border-collapse: collapse; margin-top: 12px; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: right; }}
</style></head><body>
<h1>Fraud detection by feature set</h1>
<p>train {p["train"]["start"]} .. {p["train"]["end"]} ({p["train"]["rows"]:,} transactions,
{p["train"]["frauds"]:,} frauds), {p["delay_days"]} days skipped, test {p["test"]["start"]} ..
{p["test"]["end"]} ({p["test"]["rows"]:,} transactions, {p["test"]["frauds"]:,} frauds;
without the {p["test"]["removed_known_compromised"]:,} transactions of cards already known
compromised).
Label: {html.escape(report["label"])}; seed {report["seed"]}.</p>
<ul>{legend}</ul>
<div class="panels">{panels}</div>
<table><caption>card precision@{k} per test day</caption>
<tr><th>set</th><th>model</th>{days}</tr>{per_day}</table>
</body></html>
"""
    path.write_text(page)


def _panel(title: str, metric: str, models: list[str], sets: list[dict],
           results: dict, ceiling: float | None = None) -> str:
    width, height, top, bottom, left = 300, 220, 28, 30, 34
    plot_h = height - top - bottom
    group_w = (width - left - 10) / max(len(models), 1)
    bar_w = min(40.0, (group_w - 16) / max(len(sets), 1))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e4e4e4"/><text x="{left - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end" font-size="10" fill="#777">{tick:g}</text>')
    if ceiling is not None:
        y = top + plot_h * (1 - ceiling)
        parts.append(f'<line x1="{left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#b0463c" stroke-dasharray="4 3"/><text x="{width - 6}" '
                     f'y="{y - 4:.1f}" text-anchor="end" font-size="10" fill="#b0463c">'
                     f'every fraud card found: {ceiling:.3f}</text>')
    for g, model in enumerate(models):
        x0 = left + g * group_w + (group_w - bar_w * len(sets)) / 2
        for i, s in enumerate(sets):
            value = results[(s["name"], model)][metric]
            v = 0.0 if value is None else max(0.0, min(1.0, value))
            x, h = x0 + i * bar_w, plot_h * v
            label = _num(value)
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{h:.1f}" fill="{COLORS[i % len(COLORS)]}">'
                         f'<title>{html.escape(s["name"])} {model}: {label}</title></rect>'
                         f'<text x="{x + bar_w / 2 - 1:.1f}" y="{top + plot_h - h - 3:.1f}" '
                         f'text-anchor="middle" font-size="9">{label}</text>')
        parts.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{height - 10}" '
                     f'text-anchor="middle">{html.escape(model)}</text>')
    parts.append("</svg>")
    return "".join(parts)
