"""The monitor's HTML report of one model: accuracy over time (a regressor's MAE) with what
happened, and every feature's current distribution against its training reference -- a histogram
for a numeric feature, bars of category shares for a categorical or boolean one -- and, for a
regressor, its predicted values against its predictions on the holdout. Pure: state in, HTML out.

Plots are inline SVG — no plotting library, no script, no network: the page can be saved,
mailed or attached to an incident as one file.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

import numpy as np

from services.monitor.categorical import UNSEEN, CategoryBuckets
from services.monitor.psi import psi
from services.monitor.watch import ModelWatch
from shared.reference import OTHER_CATEGORIES, CategoryReference, bin_counts

WIDTH, HEIGHT, PAD = 760, 260, 40
MAX_BARS = 12
"""Categories drawn one by one (by training share); the rest share one bar."""
OTHER_BAR = "other categories"
UNSEEN_BAR = "unseen"
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MARKER_COLOURS = {
    "drift": "#d62728",
    "retrain": "#7f7f7f",
    "promoted": "#2ca02c",
    "rolled_back": "#ff7f0e",
    "canary_started": "#1f77b4",
    "shadow_started": "#9467bd",
}


def _nice_top(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x a power of ten at or above ``value`` (1 for nothing): the top
    of a MAE axis.

    >>> _nice_top(0.0), _nice_top(3.2), _nice_top(0.21), _nice_top(700.0)
    (1.0, 5.0, 0.25, 1000.0)
    """
    if not value > 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= value * (1 - 1e-12))


def _accuracy_svg(watch: ModelWatch, now: datetime) -> str:
    """Accuracy over time per version and variant -- a regressor's MAE, on an axis from 0 to
    above the largest window (its holdout MAE dashed) -- with the timeline's markers."""
    regression = watch.spec.regression
    metric = "MAE" if regression else "accuracy"
    series = []
    for key in watch.live.keys(watch.model):
        points = [
            (p.start.timestamp(), p.mae if regression else p.accuracy)
            for p in watch.live.series(*key)
            if p.counts.labelled
        ]
        if points:
            series.append((f"v{key[1]} {key[2]}", points))
    times = [t for _, pts in series for t, _ in pts] + [m.at.timestamp() for m in watch.markers]
    if not times:
        return f"<p>No labelled predictions yet: {metric} appears once ground truth arrives.</p>"
    t0 = min(times)
    t1 = max(max(times), t0 + 1.0)
    reference = watch.drift.reference
    expected = reference.expected_error.mae if reference and reference.expected_error else None
    top = _nice_top(max([v for _, pts in series for _, v in pts] + [expected or 0.0])) if regression else 1.0

    def x(t: float) -> float:
        return PAD + (t - t0) / (t1 - t0) * (WIDTH - 2 * PAD)

    def y(v: float) -> float:
        return HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{metric} over time">'
    ]
    for level in (top * k / 4 for k in range(5)):
        text = f"{level:.3g}" if regression else f"{level:.2f}"
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="4" y="{y(level) + 4:.1f}" font-size="11">{text}</text>')
    if regression and expected is not None:
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(expected):.1f}" y2="{y(expected):.1f}" stroke="#999" '
            f'stroke-dasharray="2 2"><title>holdout MAE of v{watch.champion}: {expected:.4g}</title></line>'
        )
    for marker in watch.markers:
        mx = x(marker.at.timestamp())
        colour = MARKER_COLOURS.get(marker.kind, "#000")
        parts.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{PAD / 2}" y2="{HEIGHT - PAD}" stroke="{colour}" '
            f'stroke-dasharray="4 3"><title>{html.escape(marker.at.isoformat())} {marker.kind}: '
            f"{html.escape(marker.text)}</title></line>"
        )
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{WIDTH - PAD + 4}" y="{PAD + 14 * i}" font-size="11" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    legend = " ".join(
        f'<span style="color:{c}">&#9474; {k.replace("_", " ")}</span>' for k, c in MARKER_COLOURS.items()
    )
    return "".join(parts) + f'<p class="legend">{legend} (hover a line for details)</p>'


def _histogram_svg(name: str, edges: list[float], reference: list[float], current: list[float]) -> str:
    w, h = 360, 140
    bins = len(reference)
    top = max([*reference, *current, 1e-9])
    bar = (w - 20) / bins / 2
    parts = [
        f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(name)} histogram">'
    ]
    for i in range(bins):
        for j, (values, colour) in enumerate(((reference, "#9ecae1"), (current, "#fd8d3c"))):
            bh = values[i] / top * (h - 30)
            parts.append(
                f'<rect x="{10 + (2 * i + j) * bar:.1f}" y="{h - 20 - bh:.1f}" width="{bar:.1f}" '
                f'height="{bh:.1f}" fill="{colour}"/>'
            )
    parts.append(f'<text x="10" y="{h - 5}" font-size="10">{edges[0]:.3g}</text>')
    parts.append(f'<text x="{w - 50}" y="{h - 5}" font-size="10">{edges[-1]:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bars_svg(name: str, labels: list[str], reference: list[float], current: list[float]) -> str:
    """Reference and live share of each category, side by side, the category under each pair."""
    bars = len(labels)
    w, h = max(360, 40 * bars + 20), 160
    top = max([*reference, *current, 1e-9])
    bar = (w - 20) / bars / 2
    parts = [
        f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(name)} categories">'
    ]
    for i, label in enumerate(labels):
        for j, (values, colour) in enumerate(((reference, "#9ecae1"), (current, "#fd8d3c"))):
            bh = values[i] / top * (h - 45)
            parts.append(
                f'<rect x="{10 + (2 * i + j) * bar:.1f}" y="{h - 35 - bh:.1f}" width="{bar:.1f}" '
                f'height="{bh:.1f}" fill="{colour}"><title>{html.escape(label)}: {values[i]:.1%}</title></rect>'
            )
        shown = label if len(label) <= 8 else label[:7] + "…"
        parts.append(
            f'<text x="{10 + (2 * i + 1) * bar:.1f}" y="{h - 22}" font-size="9" text-anchor="middle">'
            f"{html.escape(shown)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _category_card(name: str, reference: CategoryReference, buckets: CategoryBuckets, recent: list[str]) -> str:
    """One categorical feature: training share vs share of the recent live values, per category
    (the most common :data:`MAX_BARS`; the others, with the reference's own
    :data:`~shared.reference.OTHER_CATEGORIES`, in one bar; then the unseen ones), and the PSI
    of those values over the monitor's buckets."""
    named = sorted(
        ((k, max(v, 0.0)) for k, v in reference.shares.items() if k != OTHER_CATEGORIES), key=lambda kv: (-kv[1], kv[0])
    )
    tail = max(reference.shares.get(OTHER_CATEGORIES, 0.0), 0.0)
    total = sum(v for _, v in named) + tail or 1.0
    slot = {k: i for i, (k, _) in enumerate(named[:MAX_BARS])}
    labels = [k for k, _ in named[:MAX_BARS]]
    expected = [v / total for _, v in named[:MAX_BARS]]
    rest: int | None = None
    if len(named) > MAX_BARS or OTHER_CATEGORIES in reference.shares:
        rest = len(labels)
        labels.append(OTHER_BAR)
        expected.append((sum(v for _, v in named[MAX_BARS:]) + tail) / total)
    counts = [0] * len(labels)
    unseen = 0
    for key in recent:
        if key in slot:
            counts[slot[key]] += 1
        elif rest is not None and (key in reference.shares or buckets.unseen_bucket is not None):
            counts[rest] += 1  # a training category beyond those drawn, or one the reference does not name
        else:
            unseen += 1
    if unseen:
        labels.append(UNSEEN_BAR)
        expected.append(0.0)
        counts.append(unseen)
    n = len(recent)
    current = [c / n if n else 0.0 for c in counts]
    if n:
        codes = buckets.codes(recent)
        psi_counts, _ = buckets.counts(codes)
        score = (
            f"PSI {buckets.psi(psi_counts):.3f} over the last {n} values; unseen categories "
            f"{int((codes == UNSEEN).sum()) / n:.1%} (training: {buckets.unseen_expected:.1%})"
        )
    else:
        score = "no live values yet"
    return (
        f'<div class="card"><h3>{html.escape(name)}</h3>'
        f"{_bars_svg(name, labels, expected, current)}<p>{html.escape(score)}</p></div>"
    )


def _features_html(watch: ModelWatch) -> str:
    reference = watch.drift.reference
    if reference is None:
        return "<p>No reference statistics (no production version yet).</p>"
    cards = []
    for name, feature in reference.features.items():
        edges = list(feature.histogram.edges)
        recent = np.asarray(list(watch.recent.get(name, ())), dtype=np.float64)
        if recent.size:
            inner = np.clip(np.searchsorted(edges, recent, side="right") - 1, 0, len(edges) - 2)
            counts = np.bincount(inner, minlength=len(edges) - 1)
            current = (counts / recent.size).tolist()
            score = f"PSI {psi(feature.histogram, recent.tolist()):.3f} over the last {recent.size} values"
        else:
            current = [0.0] * (len(edges) - 1)
            score = "no live values yet"
        cards.append(
            f'<div class="card"><h3>{html.escape(name)}</h3>'
            f"{_histogram_svg(name, edges, list(feature.histogram.proportions), current)}"
            f"<p>{score}</p></div>"
        )
    categorical = watch.drift.categorical
    for name, category in reference.categories.items():
        buckets = categorical.get(name) or CategoryBuckets.of(category)
        cards.append(_category_card(name, category, buckets, list(watch.recent_categories.get(name, ()))))
    return (
        '<p><span style="color:#9ecae1">&#9632; training reference</span> '
        '<span style="color:#fd8d3c">&#9632; live traffic</span></p>' + "".join(cards)
    )


def _predictions_html(watch: ModelWatch) -> str:
    """A regressor's recent predicted values against its predictions on the holdout, with their PSI."""
    reference = watch.drift.reference
    hist = reference.predictions.value_histogram if reference else None
    if hist is None:
        return "<p>No reference of predicted values (no production version yet).</p>"
    edges = list(hist.edges)
    recent = list(watch.recent_predictions)
    if recent:
        counts = bin_counts(hist, recent)
        current = [c / len(recent) for c in counts]
        score = f"PSI {psi(hist, recent):.3f} over the last {len(recent)} predictions"
    else:
        current = [0.0] * len(hist.proportions)
        score = "no live predictions yet"
    return (
        '<p><span style="color:#9ecae1">&#9632; holdout predictions</span> '
        '<span style="color:#fd8d3c">&#9632; live predictions</span></p>'
        f'<div class="card"><h3>predicted values</h3>'
        f"{_histogram_svg('predicted values', edges, list(hist.proportions), current)}<p>{score}</p></div>"
    )


def _live_text(live: dict[str, Any]) -> str:
    """One status row of live figures: accuracy, or a regressor's MAE and RMSE."""
    if "mae" not in live:
        return f"accuracy {live['accuracy']:.3f} over {live['labelled']} labelled predictions"
    expected = f" (holdout MAE {live['expected_mae']:.4g})" if live.get("expected_mae") is not None else ""
    return f"MAE {live['mae']:.4g}, RMSE {live['rmse']:.4g} over {live['labelled']} labelled predictions{expected}"


def _status_html(status: dict[str, Any]) -> str:
    rows = [
        ("champion", f"v{status['champion']}" if status["champion"] else "none"),
        ("canary", f"v{status['canary']}" if status["canary"] else "none"),
        (
            "join",
            f"{status['join']['hits']} labels joined, {status['join']['misses']} missed "
            f"(hit rate {status['join']['hit_rate']:.1%}), {status['join']['held']} entries held",
        ),
    ]
    for live in status["live"]:
        rows.append((f"v{live['version']} {live['variant']}", _live_text(live)))
    last = status["drift"].get("last")
    if last:
        where = f" on {last['feature']}" if last.get("feature") else ""
        rows.append(
            (
                "last drift",
                f"{last['kind']}{where} by {last['detector']} at {last['occurred_at']}: statistic "
                f"{last['statistic']:.4g} vs {last['threshold']:.4g}, {last['severity']}",
            )
        )
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _events_html(status: dict[str, Any]) -> str:
    items = "".join(
        f"<li><code>{html.escape(e['at'][:19])}</code> <b>{html.escape(e['kind'])}</b> {html.escape(e['text'])}</li>"
        for e in reversed(status["events"])
    )
    return f"<ul>{items}</ul>" if items else "<p>Nothing yet.</p>"


def render_report(watch: ModelWatch, status: dict[str, Any], now: datetime) -> str:
    """The whole page."""
    title = f"driftloop — {html.escape(watch.model)}"
    regression = watch.spec.regression
    predictions = f"<h2>Predictions: holdout vs live traffic</h2>\n{_predictions_html(watch)}\n" if regression else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
svg {{ max-width: 100%; height: auto; }}
@media (max-width: 760px) {{ body {{ margin: 1em; }} table {{ display: block; overflow-x: auto; }} }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 4px 12px; border-bottom: 1px solid #eee; }}
.card {{ display: inline-block; margin: 0 16px 16px 0; vertical-align: top; }}
.card h3 {{ margin: 0; font-size: 14px; }} .legend span {{ margin-right: 12px; font-size: 12px; }}
</style></head><body>
<p><a href="/">all models</a></p>
<h1>{title}</h1>
<p>Generated {html.escape(now.isoformat(timespec="seconds"))}.</p>
{_status_html(status)}
<h2>{"Live MAE" if regression else "Live accuracy"}</h2>
{_accuracy_svg(watch, now)}
<h2>Features: training reference vs live traffic</h2>
{_features_html(watch)}
{predictions}<h2>What happened</h2>
{_events_html(status)}
</body></html>
"""
