"""Result rows and the one table they are printed as (terminal and docs/performance.md)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured figure, with the baseline it is quoted against and the target it must meet."""

    group: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""
    text: str = ""  # shown instead of the number, for yes/no facts such as a query plan

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline


@dataclass
class Section:
    """What one benchmark group returns: its rows, and profiles or notes explaining misses."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| group | measure | ours | baseline | ratio | target | met |",
        "| --- | --- | ---: | --- | ---: | --- | :---: |",
    ]
    for row in rows:
        baseline = f"{row.baseline_name}: {fmt(row.baseline, row.unit)}" if row.baseline is not None else ""
        baseline = baseline or row.baseline_name
        met = "" if row.ok is None else ("yes" if row.ok else "**NO**")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        name = row.name + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.group} | {name} | {row.text or fmt(row.value, row.unit)} | {baseline} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a sample (p99 of 500 samples is the 5th largest)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def median(samples: list[float]) -> float:
    return statistics.median(samples)
