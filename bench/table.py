"""The one table `make bench` ends with: each figure, its goal, and its ratio from the same run.

Benchmarks `record()` their figures into the JSON-lines file named by HC_BENCH_RESULTS (set by
`make bench`; without it recording does nothing), and `python -m bench.table FILE` prints the table.
A ratio is always of two figures measured in the same `make bench` run, on the same stack.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

RESULTS_ENV = "HC_BENCH_RESULTS"


def record(name: str, value: float, unit: str) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps({"name": name, "value": value, "unit": unit}) + "\n")


def record_cpu(prefix: str, per_item_ms: Mapping[str, float]) -> None:
    """CPU ms per item by component (`<prefix>.<component>`), and their sum (`<prefix>.total`)."""
    for component, ms in per_item_ms.items():
        record(f"{prefix}.{component}", ms, "ms")
    record(f"{prefix}.total", sum(per_item_ms.values()), "ms")


def load(path: Path) -> dict[str, float]:
    """name -> value; a figure recorded twice keeps its last value."""
    figures: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                figures[entry["name"]] = float(entry["value"])
    return figures


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    goal: str
    ratio: float | None
    verdict: str  # "met", "MISSED", "above bare" (a CPU share to explain), "" (informational), "not measured"


# Which part of the bare pipeline does what a component does: the driver is the client that books
# (the API's Temporal calls) and starts billing runs (the consumer's).
BARE_COUNTERPART = {"temporal": "temporal", "worker": "worker", "api": "driver", "consumer": "driver"}


def _num(value: float, unit: str) -> str:
    return f"{value:,.1f} {unit}".strip()


def _ratio_row(
    figs: Mapping[str, float],
    label: str,
    name: str,
    unit: str,
    against: str,
    goal: float,
    what: str,
    better: Callable[[float, float], bool],
) -> Row:
    value, base = figs.get(name), figs.get(against)
    if value is None or base is None or not base or math.isnan(value) or math.isnan(base):
        return Row(label, "—" if value is None else _num(value, unit), f"{what}", None, "not measured")
    ratio = value / base
    return Row(
        label,
        _num(value, unit),
        f"{what} ({_num(base, unit)})",
        ratio,
        "met" if better(ratio, goal) else "MISSED",
    )


def _limit_row(figs: Mapping[str, float], label: str, name: str, limit: float, unit: str) -> Row:
    value = figs.get(name)
    if value is None or math.isnan(value):
        return Row(label, "—", f"<= {_num(limit, unit)}", None, "not measured")
    ratio = value / limit
    return Row(label, _num(value, unit), f"<= {_num(limit, unit)}", ratio, "met" if ratio <= 1 else "MISSED")


def _cpu_rows(figs: Mapping[str, float], label: str, prefix: str, bare: str) -> list[Row]:
    what = "vs bare booking's" if bare.startswith("bare.booking") else "vs bare pipeline's"
    rows = [_ratio_row(figs, label, f"{prefix}.total", "ms", f"{bare}.total", 0, what, lambda r, g: True)]
    rows[0] = Row(
        rows[0].figure, rows[0].value, rows[0].goal, rows[0].ratio, "" if rows[0].ratio else rows[0].verdict
    )
    parts = sorted(
        (
            (k.removeprefix(prefix + "."), v)
            for k, v in figs.items()
            if k.startswith(prefix + ".") and not k.endswith(".total")
        ),
        key=lambda kv: -kv[1],
    )
    for component, ms in parts:
        if ms < 0.05:
            continue
        counterpart = BARE_COUNTERPART.get(component)
        share = figs.get(f"{bare}.{counterpart}") if counterpart else None
        if not share:
            rows.append(
                Row(f"  {component}", _num(ms, "ms"), "bare has none (its own work)", None, "above bare")
            )
            continue
        ratio = ms / share
        against = f"bare {counterpart}'s ({_num(share, 'ms')})"
        rows.append(Row(f"  {component}", _num(ms, "ms"), against, ratio, "above bare" if ratio > 1 else ""))
    return rows


def build(figs: Mapping[str, float]) -> list[Row]:
    def at_least(ratio: float, goal: float) -> bool:
        return ratio >= goal

    invoices = "Booking -> invoice with PDF /s"
    rows = [
        _ratio_row(figs, "Bookings/s", "appointments.rate", "/s", "bare.booking.rate", 0.8,
                   ">= 0.8 x bare booking", at_least),
        _ratio_row(figs, invoices, "billing.durable.rate", "/s", "bare.pipeline.rate", 0.8,
                   ">= 0.8 x bare pipeline", at_least),
        _ratio_row(figs, invoices, "billing.durable.rate", "/s", "billing.baseline.rate", 0.5,
                   ">= 0.5 x non-durable", at_least),
        *_cpu_rows(figs, "CPU per booking", "appointments.cpu", "bare.booking.cpu"),
        *_cpu_rows(figs, "CPU per invoice", "billing.durable.cpu", "bare.pipeline.cpu"),
        _limit_row(figs, "Booking -> ISSUED p50, sustainable", "billing.sustainable.p50", 2000, "ms"),
        _limit_row(figs, "Booking -> ISSUED p99, sustainable", "billing.sustainable.p99", 2000, "ms"),
        _ratio_row(figs, "Logins/s", "auth.login.rate", "/s", "auth.login.limit", 0.8,
                   ">= 0.8 x bcrypt limit", at_least),
        _limit_row(figs, "GET /patients p99, logins saturating", "auth.read.busy.p99", 50, "ms"),
        _limit_row(figs, "Analytics freshness p99", "analytics.freshness.p99", 1000, "ms"),
    ]  # fmt: skip
    # Below its offered rate, the durable phase shows the load generator, not a ceiling.
    offered, durable = figs.get("billing.offered.rate"), figs.get("billing.durable.rate")
    if offered and durable and durable >= 0.95 * offered:
        rows = [
            replace(r, verdict=f"{r.verdict} (offered-rate bound)")
            if r.value.endswith("/s") and r.figure == invoices
            else r
            for r in rows
        ]
    return rows


def render(rows: list[Row]) -> str:
    header = ("figure", "value", "goal / against (same run)", "ratio", "")
    cells = [header] + [
        (r.figure, r.value, r.goal, "—" if r.ratio is None else f"{r.ratio:.2f}", r.verdict) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(c: tuple[str, ...]) -> str:
        padded = [c[i].rjust(widths[i]) if i == 1 else c[i].ljust(widths[i]) for i in range(len(c))]
        return "  ".join(padded).rstrip()

    lines = [line(c) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.table RESULTS.jsonl", file=sys.stderr)
        return 2
    print(render(build(load(Path(argv[0])))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
