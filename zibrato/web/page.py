"""The page the server sends: index.html with the first page of the table already in it.

Why: a page that only JavaScript fills shows nothing to a browser without it, to a
plain screenshot taken before the first flush event, or to ``curl``. So ``GET /``
renders the same first page that the script's first ``/api/series`` request gets
(the same rows, columns, order, paging and number formats) and web.js replaces
those rows in place at its first update.

Everything from the wire (names, sources, tags, types, units) is written through
:func:`html.escape`; the initial paging reaches the script as ``data-`` attributes
of the table, never as inline script (the Content-Security-Policy forbids it).
"""

from __future__ import annotations

import time as _time
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from importlib import resources

from .view import History

#: rows a page shows: the script's ``limit`` too (it reads it from ``data-limit``)
PAGE_SIZE = 100
#: web.js's SECOND_UNITS: a timer's statistics are shown in the largest unit that keeps them >= 1
SECOND_UNITS = ((3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
DASH = "–"


def render(history: History, template: str | None = None) -> str:
    """index.html with the status line, the first table page and its pager filled in."""
    if template is None:
        template = resources.files(__package__).joinpath("static").joinpath("index.html").read_text("utf-8")
    summary = history.summary()
    table = history.table(offset=0, limit=PAGE_SIZE)
    rows = table["rows"]
    first = 1 if table["matched"] else 0
    last = table["offset"] + len(rows)
    paging = " ".join(
        f'data-{key}="{escape(str(table[key]))}"' for key in ("version", "offset", "limit", "matched", "total")
    )
    replacements = {
        "waiting for the first flush…": escape(status_text(summary)),
        '<table id="series">': f'<table id="series" {paging}>',
        "<tbody></tbody>": "<tbody>" + "".join(table_row(r) for r in rows) + "</tbody>",
        '<span id="page-info"></span>': f'<span id="page-info">{first:,}{DASH}{last:,} of {table["matched"]:,}</span>',
        '<button id="prev" type="button">': '<button id="prev" type="button" disabled>',
        '<button id="next" type="button">': '<button id="next" type="button"'
        + (" disabled>" if last >= table["matched"] else ">"),
        '<p id="empty" hidden>': '<p id="empty" hidden>' if rows or summary["time"] is None else '<p id="empty">',
    }
    for marker, html in replacements.items():
        if template.count(marker) != 1:
            raise ValueError(f"index.html must hold {marker!r} exactly once to render the first page")
        template = template.replace(marker, html)
    return template


def status_text(summary: dict) -> str:
    """The status line until the script's first update (the clock in UTC: the server knows no time zone)."""
    if summary["time"] is None:
        return "waiting for the first flush…"
    clock = _time.strftime("%H:%M:%S", _time.gmtime(summary["time"]))
    interval = f" · {plain(summary['interval'])} s interval" if summary["interval"] else ""
    return (
        f"last flush {clock} UTC{interval} · {summary['series']:,} series · "
        f"{summary['intervals']} of {summary['history']} intervals held"
    )


def table_row(row: dict) -> str:
    """One ``<tr>`` as web.js's tableRow builds it: type, name, source, tags, statistics."""
    classes = f' class="outcome-{_text(row["outcome"])}"' if row["outcome"] else ""
    tags = "".join(f'<span class="tag{_tag_class(tag)}">{_text(tag)}</span>' for tag in row["tags"])
    stats = "".join(
        f'<span class="stat"><span class="key">{_text(key)}=</span>'
        f'<span class="value">{_text(format_value(value, stat_unit(row, key)))}</span></span>'
        for key, value in row["stats"].items()
    )
    return (
        f'<tr data-id="{_text(row["id"])}"{classes}>'
        f'<td class="type">{_text(row["type"])}</td>'
        f'<td class="name">{_text(row["name"])}</td>'
        f'<td class="source">{_text(row["source"] or DASH)}</td>'
        f'<td class="tags">{tags}</td><td class="stats">{stats}</td></tr>'
    )


def _text(value: object) -> str:
    """Any value from the wire as escaped text (None as nothing): never markup, never an exception."""
    return "" if value is None else escape(str(value))


def _tag_class(tag: str) -> str:
    return {"outcome:ok": " outcome-ok", "outcome:error": " outcome-error"}.get(tag, "")


# --- numbers, exactly as web.js writes them ------------------------------------------


def stat_unit(row: dict, key: str) -> str | None:
    """web.js's statUnit: counts, counters, gauges and sets are plain numbers."""
    if key == "count" or row["type"] in ("counter", "gauge", "set"):
        return None
    unit = row["unit"]
    return str(unit) if unit is not None else None


def format_value(value: float | None, unit: str | None) -> str:
    """web.js's format: three significant digits, seconds in a human unit, '–' for null."""
    if value is None:
        return DASH
    if unit == "s":
        return human_seconds(value)
    return plain(value) + (" " + unit if unit else "")


def human_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    value, unit = 0.0, "ns"
    for scale, name in SECOND_UNITS:
        value, unit = _precision3(seconds / scale), name
        if abs(value) >= 1:
            break
    return plain(value) + unit


def plain(value: float) -> str:
    rounded = _precision3(value)
    if 1000 <= abs(rounded) < 1e21:
        return str(int(rounded))  # toFixed(0) of a number already rounded to three digits
    return _js_string(rounded)


def _precision3(value: float) -> float:
    """JavaScript's Number(value.toPrecision(3)): an exact tie rounds away from zero."""
    if value == 0:
        return 0.0
    exact = Decimal(value)
    exponent = exact.adjusted() - 2
    return float(exact.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP))


def _js_string(value: float) -> str:
    """JavaScript's String(number) for finite numbers: shortest digits, exponent outside 1e-6..1e21."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    digits = Decimal(repr(value))
    if 1e-6 <= abs(value) < 1e21:
        return format(digits, "f")
    mantissa, _, power = f"{digits:e}".partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(power):+d}"
