"""The benchmark table's ratios and verdicts, and the soak's memory-growth detector, on given data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench import table
from bench.soak import keeps_growing

FIGURES = {
    "bare.booking.rate": 40.0,
    "appointments.rate": 30.0,
    "bare.pipeline.rate": 20.0,
    "billing.offered.rate": 50.0,
    "billing.durable.rate": 17.0,
    "billing.baseline.rate": 40.0,
    "bare.pipeline.cpu.temporal": 50.0,
    "bare.pipeline.cpu.worker": 40.0,
    "bare.pipeline.cpu.driver": 30.0,
    "bare.pipeline.cpu.total": 120.0,
    "billing.durable.cpu.temporal": 100.0,
    "billing.durable.cpu.worker": 20.0,
    "billing.durable.cpu.postgres": 10.0,
    "billing.durable.cpu.s3": 0.01,
    "billing.durable.cpu.total": 130.01,
    "billing.sustainable.p50": 400.0,
    "billing.sustainable.p99": 2500.0,
    "auth.login.rate": 9.0,
    "auth.login.limit": 10.0,
    "auth.read.busy.p99": 20.0,
}


def row(rows: list[table.Row], figure: str, goal_part: str = "") -> table.Row:
    return next(r for r in rows if r.figure == figure and goal_part in r.goal)


def test_throughput_ratios_are_against_figures_of_the_same_file() -> None:
    rows = table.build(FIGURES)
    booking = row(rows, "Bookings/s")
    assert booking.ratio == pytest.approx(0.75) and booking.verdict == "MISSED"
    vs_bare = row(rows, "Booking -> invoice with PDF /s", "bare")
    assert vs_bare.ratio == pytest.approx(0.85) and vs_bare.verdict == "met"
    vs_baseline = row(rows, "Booking -> invoice with PDF /s", "non-durable")
    assert vs_baseline.ratio == pytest.approx(0.425) and vs_baseline.verdict == "MISSED"
    assert row(rows, "Logins/s").verdict == "met"


def test_cpu_rows_compare_each_component_with_its_bare_counterpart() -> None:
    rows = table.build(FIGURES)
    assert row(rows, "  temporal").ratio == pytest.approx(2.0)
    assert row(rows, "  temporal").verdict == "above bare"
    assert row(rows, "  worker").ratio == pytest.approx(0.5)
    assert row(rows, "  worker").verdict == ""
    postgres = row(rows, "  postgres")
    assert postgres.ratio is None and "own work" in postgres.goal and "bare has none" in postgres.goal
    assert not [r for r in rows if r.figure == "  s3"]  # below 0.05 ms: left out
    total = row(rows, "CPU per invoice")
    assert total.ratio == pytest.approx(130.01 / 120.0)


def test_limits_and_missing_figures() -> None:
    rows = table.build(FIGURES)
    assert row(rows, "Booking -> ISSUED p99, sustainable").verdict == "MISSED"
    assert row(rows, "Booking -> ISSUED p50, sustainable").verdict == "met"
    assert row(rows, "GET /patients p99, logins saturating").ratio == pytest.approx(0.4)
    fresh = row(rows, "Analytics freshness p99")
    assert fresh.verdict == "not measured" and fresh.value == "—"
    assert row(rows, "CPU per booking").verdict == "not measured"


def test_a_durable_rate_at_the_offered_rate_is_marked_as_not_a_ceiling() -> None:
    rows = table.build({**FIGURES, "billing.offered.rate": 17.0})
    assert row(rows, "Booking -> invoice with PDF /s", "bare").verdict.endswith("(offered-rate bound)")
    assert row(rows, "Bookings/s").verdict == "MISSED"


def test_nan_figures_count_as_not_measured() -> None:
    rows = table.build({**FIGURES, "bare.booking.rate": math.nan})
    assert row(rows, "Bookings/s").verdict == "not measured"


def test_record_and_load_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv(table.RESULTS_ENV, str(results))
    table.record("appointments.rate", 12.5, "/s")
    table.record_cpu("appointments.cpu", {"api": 3.0, "worker": 4.5})
    table.record("appointments.rate", 13.0, "/s")  # the last value wins
    figures = table.load(results)
    assert figures == {
        "appointments.rate": 13.0,
        "appointments.cpu.api": 3.0,
        "appointments.cpu.worker": 4.5,
        "appointments.cpu.total": 7.5,
    }
    text = table.render(table.build(figures))
    lines = text.splitlines()
    assert lines[0].startswith("figure") and set(lines[1]) <= {"-", " "}
    assert "Bookings/s" in text and "not measured" in text


def test_recording_without_a_results_file_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(table.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    table.record("x", 1.0, "/s")
    assert list(tmp_path.iterdir()) == []


def series(values: Sequence[float], step: float = 30.0) -> list[tuple[float, float]]:
    return [(i * step, v) for i, v in enumerate(values)]


def test_steady_linear_growth_is_caught_with_its_rate_per_hour() -> None:
    growth = keeps_growing(series([500 + 10 * i for i in range(20)]))  # 10 MB per 30 s
    assert growth.growing
    assert growth.per_hour_mb == pytest.approx(1200, rel=0.01)
    assert (growth.first_mb, growth.last_mb) == (500, 690)


def test_warm_up_then_plateau_is_not_growth() -> None:
    warm = [200, 300, 400, 500, 600]
    assert not keeps_growing(series(warm + [600 + (i % 3) for i in range(15)])).growing


def test_garbage_collector_sawtooth_is_not_growth() -> None:
    saw = [400 + 40 * (i % 4) for i in range(24)]
    assert not keeps_growing(series(saw)).growing


def test_a_few_megabytes_of_drift_is_not_growth() -> None:
    assert not keeps_growing(series([1000 + 0.5 * i for i in range(20)])).growing  # +10 MB in all


def test_too_few_samples_decide_nothing() -> None:
    assert not keeps_growing([]).growing
    assert not keeps_growing(series([100, 200, 300])).growing
