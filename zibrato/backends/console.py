"""zibrato-console: print each flush to the terminal, as a table or as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, TextIO

from ..destination import Destination, Interval
from ..summary import Summary, percentile_values

# no median: the table shows p50 (nearest rank, as every percentile here); the
# JSON's "median" (interpolated between the two middle values) can differ from it
_TIMER_COLUMNS: Final = ("count", "mean", "min", "max", "stddev")
FORMATS = ("table", "json")


class Console(Destination):
    """The worker a newcomer runs first; ``--format json`` is a stable format for tools.

    The mapping is :func:`json_lines` or :func:`table`; the transport, a text stream.
    """

    name = "console"

    def __init__(self, format: str = "table", stream: TextIO | None = None, sketch: bool = False) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r} (table or json)")
        self.format = format
        self.sketch = sketch
        self.stream = stream
        self.lines_written = 0

    def render(self, interval: Interval) -> str:
        if self.format == "json":
            return json_lines(interval.summaries, sketch=self.sketch)
        return table(interval.end, interval.summaries)

    def post(self, interval: Interval) -> None:
        text = self.render(interval)
        if text:
            stream = self.stream or sys.stdout
            stream.write(text)
            stream.flush()
            self.lines_written += text.count("\n")

    def figures(self) -> dict:
        return {"format": self.format, "lines_written": self.lines_written}


def json_lines(summaries: Sequence[Mapping[str, Any]], sketch: bool = True) -> str:
    """One JSON object per series: time, interval, type, name, source, tags and the statistics.

    ``sketch=False`` leaves out a sketched series' whole distribution (up to
    1.6 kB a line, in a file people read with `tail -f`); its percentiles stay.
    """
    if not sketch:
        summaries = [{k: v for k, v in s.items() if k != "sketch"} if "sketch" in s else s for s in summaries]
    return "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in summaries)


def table(flush_time: float, summaries: list[Summary]) -> str:
    """A readable table per flush (times in human units); empty intervals print nothing."""
    if not summaries:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(flush_time))
    rows = [("type", "name", "source", "tags", "statistics")]
    for s in summaries:
        rows.append(
            (s["type"], s["name"], s.get("source") or "-", ",".join(s.get("tags") or ()) or "-", _statistics(s))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"--- {stamp} ({len(summaries)} series) ---"]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    return "\n".join(lines) + "\n\n"


def _statistics(s: Summary) -> str:
    kind = s["type"]
    if kind == "counter":
        return f"value={_number(s['value'])} count={_number(s['count'])} rate={s['rate']:.3g}/s"
    if kind == "gauge":
        return f"value={_number(s['value'])} min={_number(s['min'])} max={_number(s['max'])} count={s['count']}"
    if kind == "set":
        return f"unique={s['value']}" + ("" if s.get("exact", True) else " (estimated)")
    if not s["count"]:  # an idle series, kept until it expires
        return "count=0"
    show = human_seconds if kind == "timer" else _with_unit(s.get("unit"))
    parts = [f"count={_number(s['count'])}"] + [f"{k}={show(s[k])}" for k in _TIMER_COLUMNS[1:]]
    percentiles = [f"{k}={show(v)}" for k, v in percentile_values(s)]
    if "p50" not in s and "median" in s:  # no p50 asked for: the median, said to be interpolated
        parts.append(f"median(interpolated)={show(s['median'])}")
    parts += percentiles
    if not s.get("exact", True):
        parts.append(f"(sketch, ±{s['relative_error']:.2%})")
    return " ".join(parts)


def _with_unit(unit: str | None):
    """A histogram's numbers, 4 significant digits, followed by its unit."""
    suffix = unit or ""
    return lambda value: f"{value:.4g} {suffix}" if suffix else f"{value:.4g}"


_UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def human_seconds(seconds: float) -> str:
    """0.000123 -> '123µs', 0.9996 -> '1s', 1234 -> '20.6min', 0 -> '0s'.

    Three significant digits in the largest unit that keeps one before the
    point, chosen after rounding so that 999.6 ms reads '1s', never '1e+03ms'.
    """
    if seconds == 0:
        return "0s"
    for scale, unit in _UNITS:  # ends at ns whatever the size
        value = float(f"{seconds / scale:.3g}")
        if abs(value) >= 1:
            break
    return _plain(value) + unit


def _plain(value: float) -> str:
    """A rounded number without an exponent: 278000.0 -> '278000', 45.6 -> '45.6'."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:g}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
