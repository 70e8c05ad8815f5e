"""The monitor's landing page (``GET /``): every model it knows, one row each -- champion and
canary, live accuracy (a regressor's MAE) beside the holdout's, drift state, the last events --
each linking to its report. Pure: the status dicts of ``GET /v1/models/{m}/status`` in, HTML out.

An operator opens it first, on a laptop or on a phone when paged, so it is plain HTML with
inline CSS (no script, no external asset: it renders the same saved to a file), a table on a
wide screen that becomes one card per model on a narrow one. Every value -- model names, event
texts, drift reasons -- is escaped; a name in a link is URL-quoted as well.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

LAST_EVENTS = 3
"""Events shown per model, newest first (the report has the whole timeline)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1em 1.5em; color: #222; max-width: 1280px;
  line-height: 1.4; }
h1 { font-size: 1.5em; margin: 0.2em 0; } .meta, small, .events time { color: #666; }
a { color: #0b5cad; } code { background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
table.models { border-collapse: collapse; width: 100%; }
.models th, .models td { text-align: left; vertical-align: top; padding: 8px 10px; border-bottom: 1px solid #e5e5e5; }
.models th { font-size: 0.85em; color: #555; border-bottom: 2px solid #ccc; }
.model a.name { font-weight: 600; font-size: 1.05em; white-space: nowrap; } .model small { white-space: nowrap; }
.figure { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; white-space: nowrap; padding: 0 8px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; }
.badge.stable { background: #e3f4e1; color: #1d6b22; } .badge.confirming { background: #fff1d6; color: #8a5a00; }
.badge.drift { background: #fde2e1; color: #a11a16; } .badge.quiet { background: #eee; color: #555; }
.events { margin: 0; padding: 0; list-style: none; font-size: 0.9em; } .events li { margin-bottom: 2px; }
.empty { padding: 1.5em; background: #f7f7f7; border-radius: 6px; }
@media (max-width: 760px) {
  body { padding: 0.6em; }
  .models thead { position: absolute; left: -10000px; }
  .models, .models tbody, .models td { display: block; width: auto; }
  .models tr { display: grid; grid-template-columns: 1fr 1fr; border: 1px solid #ddd; border-radius: 6px;
    margin-bottom: 12px; padding: 4px 0; }
  .models td { border: none; padding: 4px 10px; min-width: 0; } .models td.wide { grid-column: 1 / -1; }
  .model a.name { white-space: normal; overflow-wrap: anywhere; }
  .models td::before { content: attr(data-label); display: block; font-size: 0.75em; color: #777;
    text-transform: uppercase; letter-spacing: 0.04em; }
  .figure { white-space: normal; }
}
"""


def _version(version: int | None) -> str:
    return f"v{version}" if version is not None else "none"


def live_figure(row: Mapping[str, Any]) -> str:
    """A status ``live`` row as one figure: accuracy, or a regressor's MAE (it has ``mae``).

    >>> live_figure({"accuracy": 0.93125, "labelled": 1500})
    'accuracy 0.931 over 1,500 labelled'
    >>> live_figure({"mae": 2.04567, "labelled": 40})
    'MAE 2.046 over 40 labelled'
    """
    if "mae" in row:
        value = "n/a" if row["mae"] is None else f"{row['mae']:.4g}"
        return f"MAE {value} over {row['labelled']:,} labelled"
    value = "n/a" if row.get("accuracy") is None else f"{row['accuracy']:.3f}"
    return f"accuracy {value} over {row['labelled']:,} labelled"


def _row_of(status: Mapping[str, Any], variant: str, version: int | None) -> Mapping[str, Any] | None:
    if version is None:
        return None
    return next(
        (r for r in status["live"] if r["variant"] == variant and r["version"] == version and r["labelled"]), None
    )


def _holdout(status: Mapping[str, Any], champion: Mapping[str, Any]) -> str:
    """What the champion measured on its holdout, to read the live figure against."""
    if "mae" in champion:
        expected = champion.get("expected_mae")
        return "" if expected is None else f"holdout MAE {expected:.4g}"
    error = status.get("expected_error")
    return "" if not error else f"holdout accuracy {1 - error['rate']:.3f}"


def _live_html(status: Mapping[str, Any]) -> str:
    champion = _row_of(status, "champion", status["champion"])
    canary = _row_of(status, "canary", status["canary"])
    if champion is None and canary is None:
        metric = "MAE" if status.get("task") == "regression" else "accuracy"
        return f"<small>no labelled predictions yet: {metric} appears once ground truth arrives</small>"
    parts = []
    if champion is not None:
        holdout = _holdout(status, champion)
        parts.append(
            f'<div class="figure">{html.escape(live_figure(champion))}</div>'
            + (f"<small>{html.escape(holdout)}</small>" if holdout else "")
        )
    if canary is not None:
        parts.append(f'<div class="figure"><small>canary</small> {html.escape(live_figure(canary))}</div>')
    return "".join(parts)


def _canary_html(status: Mapping[str, Any]) -> str:
    if status["canary"] is None:
        return "none"
    trial = status.get("canary_trial")
    progress = ""
    if trial and trial.get("canary") == status["canary"]:
        progress = f" <small>trial: {trial['canary_labelled']:,} of {trial['needed']:,} labelled</small>"
    return html.escape(_version(status["canary"])) + progress


def _cause(entry: Mapping[str, Any]) -> str:
    """``concept``, or ``data on income``."""
    feature = entry.get("feature")
    return f"{entry['kind']} on {feature}" if feature else str(entry["kind"])


def drift_state(drift: Mapping[str, Any]) -> tuple[str, str]:
    """The badge's class and text: a confirmed (latched) drift, one being confirmed, stable, or
    nothing seen yet.

    >>> drift_state({"latched": [{"kind": "concept", "feature": None}], "pending": []})
    ('drift', 'drift confirmed')
    >>> drift_state({"latched": [], "pending": [], "predictions": 0, "labelled": 0})
    ('quiet', 'no traffic yet')
    """
    if drift.get("latched"):
        return "drift", "drift confirmed"
    if drift.get("pending"):
        return "confirming", "confirming a drift"
    if not drift.get("predictions") and not drift.get("labelled"):
        return "quiet", "no traffic yet"
    return "stable", "stable"


def _drift_html(drift: Mapping[str, Any]) -> str:
    kind, text = drift_state(drift)
    lines = [f'<span class="badge {kind}">{html.escape(text)}</span>']
    latched = drift.get("latched") or []
    if latched:
        lines.append("<small>latched: " + html.escape(", ".join(_cause(e) for e in latched)) + "</small>")
    for pending in drift.get("pending") or []:
        lines.append(
            f"<small>{html.escape(_cause(pending))} ({html.escape(str(pending['detector']))}, "
            f"{pending['fresh_samples']:,} fresh samples)</small>"
        )
    last = drift.get("last")
    if last:
        at = str(last["occurred_at"])[:16].replace("T", " ")
        lines.append(
            f"<small>last: {html.escape(_cause(last))} drift by {html.escape(str(last['detector']))}, "
            f"{html.escape(str(last['severity']))}, {html.escape(at)}</small>"
        )
    return "<br>".join(lines)


def _events_html(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "<small>nothing yet</small>"
    items = []
    for event in list(reversed(events))[:LAST_EVENTS]:
        at = str(event["at"])
        items.append(
            f'<li><time datetime="{html.escape(at)}">{html.escape(at[:16].replace("T", " "))}</time> '
            f"<b>{html.escape(str(event['kind']).replace('_', ' '))}</b> {html.escape(str(event['text']))}</li>"
        )
    return f'<ul class="events">{"".join(items)}</ul>'


def _model_row(status: Mapping[str, Any]) -> str:
    name = str(status["model"])
    path = quote(name, safe="")
    task = status.get("task", "classification")
    cells = [
        (
            "Model",
            "model wide",
            f'<a class="name" href="/report/{path}">{html.escape(name)}</a><br>'
            f'<small>{html.escape(task)} &middot; <a href="/v1/models/{path}/status">status JSON</a></small>',
        ),
        ("Champion", "", html.escape(_version(status["champion"]))),
        ("Canary", "", _canary_html(status)),
        ("Live", "wide", _live_html(status)),
        ("Drift", "wide", _drift_html(status["drift"])),
        ("Last events", "wide", _events_html(status["events"])),
    ]
    tds = "".join(
        f'<td data-label="{label}"' + (f' class="{css}"' if css else "") + f">{body}</td>" for label, css, body in cells
    )
    return f'<tr id="model-{html.escape(path)}">{tds}</tr>'


def _summary(statuses: Sequence[Mapping[str, Any]]) -> str:
    """The header's one line: how many models, how many need a look."""
    drifted = sum(1 for s in statuses if drift_state(s["drift"])[0] == "drift")
    canaries = sum(1 for s in statuses if s["canary"] is not None)
    parts = [f"{len(statuses)} model{'s' if len(statuses) != 1 else ''}"]
    if drifted:
        parts.append(f"{drifted} with a confirmed drift")
    if canaries:
        parts.append(f"{canaries} canar{'ies' if canaries != 1 else 'y'} on trial")
    return " &middot; ".join(parts)


EMPTY = (
    '<div class="empty"><p><b>No models yet.</b> Apply a spec to add one:</p>'
    "<p><code>driftloop specs apply model.yaml</code></p>"
    "<p>To write a spec from a table of labelled data: "
    "<code>driftloop specs init data.csv --label COLUMN</code>. "
    "A model appears here a few seconds after its spec is applied.</p></div>"
)


def render_landing(statuses: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """The whole page from the models' status dicts (in the order given)."""
    if statuses:
        head = "".join(f"<th>{h}</th>" for h in ("Model", "Champion", "Canary", "Live", "Drift", "Last events"))
        rows = "".join(_model_row(s) for s in statuses)
        body = f'<table class="models"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    else:
        body = EMPTY
    generated = html.escape(now.isoformat(timespec="seconds"))
    shown = html.escape(now.strftime("%Y-%m-%d %H:%M:%S %Z").strip())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>driftloop monitor</title>
<style>{STYLE}</style></head><body>
<header><h1>driftloop monitor</h1>
<p class="meta">{_summary(statuses)} &middot; generated <time datetime="{generated}">{shown}</time></p></header>
<main>{body}</main>
<footer><p class="meta">Each model's name opens its report. <a href="/metrics">Prometheus metrics</a> &middot;
<a href="/health/ready">readiness</a></p></footer>
</body></html>
"""
