"""The demo's figures from served predictions and the loop's timeline."""

from __future__ import annotations

from pathlib import Path

from services.demo_summary import LoopEvent, Served, figures, plot, to_json


def stream(n: int, switch: int, recovered_at: int) -> list[Served]:
    """Right 19 of 20 before the switch, 3 of 4 until ``recovered_at``, then 19 of 20 again."""

    def correct(i: int) -> bool:
        return i % 4 != 0 if switch <= i < recovered_at else i % 20 != 0

    return [Served(i, correct(i), 1 if i < recovered_at else 2, "champion") for i in range(n)]


TIMELINE = [
    LoopEvent(0.0, 0, "training", 1, "v1 trained (first_data)"),
    LoopEvent(0.0, 0, "promoted", 1, "v1 first version"),
    LoopEvent(12.0, 3400, "drift", 1, "concept drift"),
    LoopEvent(15.0, 4200, "training", 2, "v2 trained (drift)"),
    LoopEvent(15.1, 4200, "canary_started", 2, "v2 canary"),
    LoopEvent(18.0, 5000, "promoted", 2, "v2 promoted by monitor"),
]


def test_figures_of_a_recovered_run() -> None:
    result = figures(stream(8000, 3000, 5000), TIMELINE, 3000, 10.0, 1, ["v1", "v2"])
    assert result.accuracy_before == 0.95 and result.accuracy_right_after == 0.75
    assert result.accuracy_recovered == 0.95
    assert (result.detection_delay_events, result.detection_delay_seconds) == (400, 2.0)
    assert (result.champion_delay_events, result.champion_delay_seconds, result.new_champion) == (2000, 8.0, 2)
    assert result.retrains_before_drift == 0 and result.alarms_before_drift == 0
    assert all(result.checks().values())
    assert to_json(result)["checks"]["drift detected"] is True


def test_checks_fail_honestly() -> None:
    early = [LoopEvent(5.0, 1000, "drift", 1, "a false alarm"), LoopEvent(6.0, 1200, "training", 2, "retrain")]
    result = figures(stream(5000, 3000, 10_000), early, 3000, 10.0, 1, ["v1", "v2"])
    checks = result.checks()
    assert not checks["no retrain before the drift"] and not checks["no drift alarm before the drift"]
    assert not checks["drift detected"] and not checks["a new champion after the drift"]
    assert not checks["recovered within 5 points of pre-drift accuracy"]
    assert dict(result.rows())["drift to new champion"] == "not reached"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "out" / "accuracy.png"
    plot(stream(3000, 1000, 2000), TIMELINE, 1000, path, "a title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
