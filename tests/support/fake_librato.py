"""A real local HTTP server standing in for the Librato Metrics API v1 in tests.

Librato cannot be reached from the test machines, so backends are tested
against this server. It enforces the documented API rules (see
``/work/shared/FACTS.md``, "Librato Metrics API v1", and Librato's own API
docs) so that a backend that breaks one of them fails its tests. Standard
library only.

Use::

    with FakeLibrato(max_batch=300) as librato:
        destination = Librato(librato.user, librato.token, api_url=librato.url)
        ...
        assert librato.wait_for(lambda: len(librato.measurements()) == 3)

Endpoints:

* ``POST /v1/metrics``: the legacy, source-based API (``gauges``/``counters``).
  Accepted: ``200`` with an empty body.
* ``POST /v1/measurements``: the tagged API, only with ``tags_enabled=True``;
  otherwise ``403`` (as for an account without tags). Accepted: ``202`` with a
  summary body (the status and body are a guess: Librato does not document them).
* Anything else: ``404``; another method on one of the two paths: ``405``.

On any rejection the WHOLE payload is rejected and nothing of it is accepted,
as Librato does. Accepted measurements are stored as a time-series store
keeps them: one value per series and second, so a measurement with the same
name, source (tagged: tags) and measure_time (tagged: time) as an earlier one
replaces it, in the same payload or a later one (:meth:`FakeLibrato.overwrites`
counts those). A measurement without a time takes the second it arrived. Error bodies are shaped like Librato's::

    {"errors": {"params": {"<field>": ["<message>"]}}}   # 400, invalid parameters
    {"errors": {"request": ["<message>"]}}               # 401, 403, 404, 405, 415, ...

Order of checks on a POST to a known path: body framing (411/413/400), then
injected delays and failures (they come before authentication, as an outage
would), then Basic auth (401), tags switch (403, tagged only), Content-Type and
Content-Encoding (415), JSON syntax (400), then the payload rules (400).

Deliberately STRICTER than the real service, so a backend stays on the
documented path: only ``application/json`` (Librato also took form-encoded
posts), only the array form of ``gauges``/``counters`` (Librato also took the
"hashed by name" object form), no ``Content-Encoding`` (gzip unconfirmed), only
the measurement keys listed in ``LEGACY_MEASUREMENT_KEYS`` (Librato also
accepted, and ignored, metric properties such as ``display_name``), and at most
``max_batch`` measurements per POST (Librato only recommends ~300).
"""

from __future__ import annotations

import base64
import binascii
import copy
import http
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLibrato"]

HOST = "127.0.0.1"
LEGACY_PATH = "/v1/metrics"
TAGGED_PATH = "/v1/measurements"

# A name or source: 1-255 characters of A-Za-z0-9.:-_ (Librato's API docs).
NAME_RE = re.compile(r"[A-Za-z0-9.:\-_]{1,255}")
# Tagged API (Librato's API docs): tag names /\A[-.:_\w]+\z/ up to 64
# characters, tag values /\A[-.:_\w ]+\z/ up to 255 (\w as in Ruby: ASCII).
TAG_NAME_RE = re.compile(r"[-.:_\w]{1,64}", re.ASCII)
TAG_VALUE_RE = re.compile(r"[-.:_\w ]{1,255}", re.ASCII)
MAX_TAGS = 50  # "a default limit of 50 tag names per measurement"

# "If the base-10 exponent of any floating point value is larger than
# 1 x 10^126, the request will be aborted with a 400" (Librato's API docs).
MAX_ABS_NUMBER = 1e126

# ASSUMPTION: Librato's accepted window for measure_time/time is unconfirmed
# (FACTS.md). These numbers are guesses: at most 15 minutes in the future and
# at most one year in the past. Change them on an instance
# (``fake.max_future_seconds = ...``) if a test needs another window.
MAX_FUTURE_SECONDS = 15 * 60
MAX_PAST_SECONDS = 365 * 24 * 3600

LEGACY_TOP_LEVEL_KEYS = frozenset({"gauges", "counters", "source", "measure_time"})
LEGACY_MEASUREMENT_KEYS = frozenset(
    {
        "name",
        "value",
        "source",
        "measure_time",
        "count",
        "sum",
        "min",
        "max",
        "sum_squares",
        "period",
        "attributes",
    }
)
LEGACY_SUMMARY_KEYS = ("sum", "min", "max", "sum_squares")  # only with count

TAGGED_TOP_LEVEL_KEYS = frozenset({"measurements", "tags", "time", "period"})
TAGGED_MEASUREMENT_KEYS = frozenset(
    {
        "name",
        "value",
        "tags",
        "time",
        "period",
        "attributes",
        "count",
        "sum",
        "min",
        "max",
        "last",
        "stddev",
        "stddev_m2",
    }
)
TAGGED_SUMMARY_KEYS = ("sum", "min", "max", "last", "stddev", "stddev_m2")

MAX_BODY_BYTES = 16 * 1024 * 1024
_POLL = 0.05  # wait_for re-checks its predicate at least this often


class _Rejection(Exception):
    """Answer the request with ``status`` and JSON ``body``; accept nothing."""

    def __init__(self, status: int, body: dict | None, headers: tuple = (), close: bool = False):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers
        self.close = close


def _request_error(status: int, *messages: str, **kw: Any) -> _Rejection:
    return _Rejection(status, {"errors": {"request": list(messages)}}, **kw)


class _Params:
    """Collects ``params`` errors: field -> list of messages."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise _Rejection(400, {"errors": {"params": self.errors}})


# --------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_problem(value: Any) -> str | None:
    """Why ``value`` is not an acceptable number, or None."""
    if not _is_number(value):
        return f"must be a number, got {value!r}"
    try:
        as_float = float(value)
    except OverflowError:
        return f"is too large: {value!r}"
    if not math.isfinite(as_float):
        return f"must be finite, got {value!r}"
    if abs(as_float) > MAX_ABS_NUMBER:
        return f"exponent is larger than 10^126: {value!r}"
    return None


def _name_problem(value: Any, what: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, got {value!r}"
    if not NAME_RE.fullmatch(value):
        return f"{what} must be 1-255 characters of A-Za-z0-9.:-_, got {value!r}"
    return None


def _time_problem(value: Any, now: float, max_future: float, max_past: float) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be an integer of Unix seconds, got {value!r}"
    if value > now + max_future:
        return f"is too far in the future: {value} (now {int(now)})"
    if value < now - max_past:
        return f"is too far in the past: {value} (now {int(now)})"
    return None


def _period_problem(value: Any) -> str | None:
    # Librato's docs: "period ... is an integer value that describes (in seconds)".
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return f"must be a positive integer of seconds, got {value!r}"
    return None


# --------------------------------------------------------------------------- the fake


class FakeLibrato:
    """A local HTTP server that checks posts like the Librato Metrics API v1 and records them."""

    def __init__(
        self,
        user: str = "user@example.com",
        token: str = "secret-token",
        max_batch: int = 300,
        tags_enabled: bool = False,
    ) -> None:
        """Credentials the server accepts, the strict batch limit, and whether the tagged API is on."""
        self.user = user
        self.token = token
        self.max_batch = max_batch
        self.tags_enabled = tags_enabled
        self.max_future_seconds: float = MAX_FUTURE_SECONDS
        self.max_past_seconds: float = MAX_PAST_SECONDS
        self._cond = threading.Condition(threading.RLock())
        self._generation = 0  # bumped on every recorded request
        # (name, source or tags, time) -> the measurement kept for that series and second
        self._measurements: dict[tuple, dict] = {}
        self._overwrites = 0
        self._requests: list[dict] = []
        self._failures: list[tuple[int, dict | None, tuple]] = []
        self._outage: int | None = None
        self._delays: list[float] = []
        self._rejected_names: set[str] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._port: int | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>``; the backend appends ``/v1/metrics``."""
        if self._port is None:
            raise RuntimeError("FakeLibrato is not started")
        return f"http://{HOST}:{self._port}"

    def start(self) -> FakeLibrato:
        """Listen (on a free port the first time, on the same port after a stop) and serve in a daemon thread."""
        with self._cond:
            if self._server is not None:
                return self
            self._stopping.clear()
            server = _Server((HOST, self._port or 0), _Handler, self)
            self._port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"FakeLibrato:{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (keep-alive ones too). Recorded data stays."""
        with self._cond:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in delay_next
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeLibrato:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what was received
    def measurements(self) -> list[dict]:
        """The measurements kept, flattened, in arrival order (copies).

        One per (name, source, measure_time) (tagged: name, tags, time): a
        later one with the same key replaced the earlier, and moved to its
        place in the order.

        Legacy: the measurement's own fields plus ``"kind"`` (``"gauge"`` or
        ``"counter"``) and the payload's top-level ``source``/``measure_time``
        where the measurement lacks them. Tagged: ``"kind": "tagged"``, the
        merged, lower-cased ``tags``, and the top-level ``time``/``period``
        where the measurement lacks them.
        """
        with self._cond:
            return copy.deepcopy(list(self._measurements.values()))

    def overwrites(self) -> int:
        """How many accepted measurements replaced one with the same series and time."""
        with self._cond:
            return self._overwrites

    def requests(self) -> list[dict]:
        """Every request received (copies): ``method``, ``path``, ``status``, ``headers`` (dict),
        ``body`` (parsed JSON, else raw text, None if empty), ``response`` (parsed JSON body or
        None) and ``received`` (``time.monotonic()`` when its request line arrived)."""
        with self._cond:
            return copy.deepcopy(self._requests)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true (True) or ``timeout`` seconds pass (False).

        Wakes at once on every request the server records, and re-checks at
        least every 50 ms for predicates on state outside the server. The
        predicate is called without the server's lock held.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._generation
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                if self._generation == seen:
                    self._cond.wait(min(remaining, _POLL))

    # ------------------------------------------------------------------ failure injection
    def fail_next(self, n: int, status: int = 500, body: dict | None = None, headers: dict | None = None) -> None:
        """The next ``n`` POSTs answer ``status`` (with ``body``, or a Librato-style error, and
        ``headers``, e.g. ``{"Retry-After": "1"}``) and accept nothing."""
        _check_status(status)
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._cond:
            self._failures.extend([(status, copy.deepcopy(body), tuple((headers or {}).items()))] * n)

    def fail_until_cleared(self, status: int = 503) -> None:
        """Every POST answers ``status`` and accepts nothing until :meth:`clear_failures`."""
        _check_status(status)
        with self._cond:
            self._outage = status

    def clear_failures(self) -> None:
        """End an outage and drop pending :meth:`fail_next` and :meth:`delay_next` injections."""
        with self._cond:
            self._outage = None
            self._failures.clear()
            self._delays.clear()

    def delay_next(self, n: int, seconds: float) -> None:
        """The next ``n`` POSTs sleep ``seconds`` (cut short by :meth:`stop`), then answer
        504 and accept nothing: the client is meant to time out first."""
        if n < 0 or seconds < 0:
            raise ValueError("n and seconds must be >= 0")
        with self._cond:
            self._delays.extend([seconds] * n)

    def reject_name(self, name: str) -> None:
        """Reject, whole, with 400, every payload containing a measurement named ``name``."""
        with self._cond:
            self._rejected_names.add(name)

    # ------------------------------------------------------------------ internals
    def _take_injection(self) -> tuple | None:
        """One POST's injected behaviour: ("delay", s), ("fail", status, body, headers) or None."""
        with self._cond:
            if self._delays:
                return ("delay", self._delays.pop(0))
            if self._outage is not None:
                return ("fail", self._outage, None, ())
            if self._failures:
                return ("fail", *self._failures.pop(0))
        return None

    def _record(self, entry: dict, accepted: list[dict]) -> None:
        arrival = int(time.time())
        with self._cond:
            self._requests.append(entry)
            for measurement in accepted:
                self._store(measurement, arrival)
            self._generation += 1
            self._cond.notify_all()

    def _store(self, measurement: dict, arrival: int) -> None:
        """Keep the last value per series and second, as Librato does."""
        if measurement["kind"] == "tagged":
            key = (measurement["name"], tuple(sorted(measurement["tags"].items())), measurement.get("time", arrival))
        else:
            key = (measurement["name"], measurement.get("source"), measurement.get("measure_time", arrival))
        if self._measurements.pop(key, None) is not None:
            self._overwrites += 1
        self._measurements[key] = measurement

    def _check_auth(self, header: str | None) -> None:
        challenge = (("WWW-Authenticate", 'Basic realm="Librato API"'),)
        if not header:
            raise _request_error(401, "Authorization Required", headers=challenge)
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise _request_error(401, "Authorization Required", headers=challenge)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _request_error(401, "Authorization Required", headers=challenge) from None
        user, sep, token = decoded.partition(":")
        if not sep or user != self.user or token != self.token:
            raise _request_error(401, "Authorization Required", headers=challenge)

    def _check_name(self, name: Any, where: str, params: _Params) -> None:
        problem = _name_problem(name, "name")
        if problem:
            params.add("name", f"{where}: {problem}")
        elif name in self._rejected_names:
            params.add("name", f"{where}: measurements named {name!r} are rejected (FakeLibrato.reject_name)")

    def _check_time(self, value: Any, field: str, where: str, now: float, params: _Params) -> None:
        problem = _time_problem(value, now, self.max_future_seconds, self.max_past_seconds)
        if problem:
            params.add(field, f"{where}: {field} {problem}")

    # ---- legacy POST /v1/metrics
    def _validate_legacy(self, payload: Any) -> list[dict]:
        if not isinstance(payload, dict):
            raise _request_error(400, "The body must be a JSON object")
        now = time.time()
        params = _Params()
        for key in payload:
            if key not in LEGACY_TOP_LEVEL_KEYS:
                params.add(key, f"is not a recognized parameter (allowed: {sorted(LEGACY_TOP_LEVEL_KEYS)})")
        if "source" in payload:
            problem = _name_problem(payload["source"], "source")
            if problem:
                params.add("source", f"top level: {problem}")
            elif payload["source"].lower() == "all":
                params.add("source", "top level: 'all' is a reserved source name")
        if "measure_time" in payload:
            self._check_time(payload["measure_time"], "measure_time", "top level", now, params)

        total = 0
        accepted: list[dict] = []
        for list_key, kind in (("gauges", "gauge"), ("counters", "counter")):
            if list_key not in payload:
                continue
            items = payload[list_key]
            if not isinstance(items, list):
                params.add(list_key, f"must be a JSON array of measurement objects, got {type(items).__name__}")
                continue
            total += len(items)
            for index, item in enumerate(items):
                where = f"{list_key}[{index}]"
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    where += f" ({item['name']!r})"
                if not isinstance(item, dict):
                    params.add(list_key, f"{where}: must be an object, got {item!r}")
                    continue
                self._check_legacy_measurement(item, kind, where, now, params)
                flat = dict(item)
                flat["kind"] = kind
                for inherited in ("source", "measure_time"):
                    if inherited not in flat and inherited in payload:
                        flat[inherited] = payload[inherited]
                accepted.append(flat)
        if total == 0:
            params.add("measurements", "the request must include at least one gauge or counter measurement")
        elif total > self.max_batch:
            params.add("measurements", f"too many measurements in one request: {total} > {self.max_batch}")
        params.raise_if_any()
        return accepted

    def _check_legacy_measurement(self, item: dict, kind: str, where: str, now: float, params: _Params) -> None:
        for key in item:
            if key not in LEGACY_MEASUREMENT_KEYS:
                params.add(key, f"{where}: is not a recognized measurement parameter")
        if "name" not in item:
            params.add("name", f"{where}: is not present")
        else:
            self._check_name(item["name"], where, params)
        if "source" in item:
            problem = _name_problem(item["source"], "source")
            if problem:
                params.add("source", f"{where}: {problem}")
            elif item["source"].lower() == "all":
                params.add("source", f"{where}: 'all' is a reserved source name")
        if "measure_time" in item:
            self._check_time(item["measure_time"], "measure_time", where, now, params)
        if "period" in item:
            problem = _period_problem(item["period"])
            if problem:
                params.add("period", f"{where}: period {problem}")
        if "attributes" in item and not isinstance(item["attributes"], dict):
            params.add("attributes", f"{where}: attributes must be an object")

        has_value, has_count = "value" in item, "count" in item
        summary_keys = [k for k in LEGACY_SUMMARY_KEYS if k in item]
        if kind == "counter" and (has_count or summary_keys):
            params.add(
                "count" if has_count else summary_keys[0],
                f"{where}: counters take only 'value' (count/sum/min/max/sum_squares are for gauges)",
            )
            return
        if has_value and has_count:
            params.add("value", f"{where}: give either 'value' or 'count' with 'sum', not both")
            return
        if not has_value and not has_count:
            params.add("value", f"{where}: is not present (give 'value', or 'count' and 'sum')")
            return
        if has_value:
            problem = _number_problem(item["value"])
            if problem:
                params.add("value", f"{where}: value {problem}")
            for key in summary_keys:
                params.add(key, f"{where}: '{key}' is only allowed with 'count'")
            return
        self._check_summary(item, LEGACY_SUMMARY_KEYS, where, params)

    def _check_summary(self, item: dict, keys: tuple, where: str, params: _Params) -> None:
        count = item["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            params.add("count", f"{where}: count must be an integer > 0, got {count!r}")
        if "sum" not in item:
            params.add("sum", f"{where}: sum must be set when count is set")
        for key in keys:
            if key in item:
                problem = _number_problem(item[key])
                if problem:
                    params.add(key, f"{where}: {key} {problem}")

    # ---- tagged POST /v1/measurements
    def _validate_tagged(self, payload: Any) -> list[dict]:
        if not isinstance(payload, dict):
            raise _request_error(400, "The body must be a JSON object")
        now = time.time()
        params = _Params()
        for key in payload:
            if key not in TAGGED_TOP_LEVEL_KEYS:
                params.add(key, f"is not a recognized parameter (allowed: {sorted(TAGGED_TOP_LEVEL_KEYS)})")
        top_tags = payload.get("tags", {})
        if not self._check_tags(top_tags, "top level", params, allow_null=False):
            top_tags = {}
        if "time" in payload:
            self._check_time(payload["time"], "time", "top level", now, params)
        if "period" in payload:
            problem = _period_problem(payload["period"])
            if problem:
                params.add("period", f"top level: period {problem}")

        items = payload.get("measurements")
        accepted: list[dict] = []
        if not isinstance(items, list):
            params.add("measurements", "must be a JSON array of measurement objects")
            items = []
        if not items:
            params.add("measurements", "the request must include at least one measurement")
        elif len(items) > self.max_batch:
            params.add("measurements", f"too many measurements in one request: {len(items)} > {self.max_batch}")
        for index, item in enumerate(items):
            where = f"measurements[{index}]"
            if not isinstance(item, dict):
                params.add("measurements", f"{where}: must be an object, got {item!r}")
                continue
            if isinstance(item.get("name"), str):
                where += f" ({item['name']!r})"
            for key in item:
                if key not in TAGGED_MEASUREMENT_KEYS:
                    params.add(key, f"{where}: is not a recognized measurement parameter")
            if "name" not in item:
                params.add("name", f"{where}: is not present")
            else:
                self._check_name(item["name"], where, params)
            if "time" in item:
                self._check_time(item["time"], "time", where, now, params)
            if "period" in item:
                problem = _period_problem(item["period"])
                if problem:
                    params.add("period", f"{where}: period {problem}")
            if "attributes" in item and not isinstance(item["attributes"], dict):
                params.add("attributes", f"{where}: attributes must be an object")
            self._check_tagged_value(item, where, params)
            merged = {k.lower(): v.lower() for k, v in top_tags.items()}
            own = item.get("tags", {})
            if self._check_tags(own, where, params, allow_null=True):
                for k, v in own.items():
                    if v is None:  # null unsets a top-level tag (Librato's "Tag Merging")
                        merged.pop(k.lower(), None)
                    else:
                        merged[k.lower()] = v.lower()
            # ASSUMPTION: a tagged measurement needs at least one tag after merging.
            if not merged:
                params.add("tags", f"{where}: at least one tag is required")
            elif len(merged) > MAX_TAGS:
                params.add("tags", f"{where}: more than {MAX_TAGS} tags")
            flat = dict(item)
            flat["tags"] = merged
            flat["kind"] = "tagged"
            for inherited in ("time", "period"):
                if inherited not in flat and inherited in payload:
                    flat[inherited] = payload[inherited]
            accepted.append(flat)
        params.raise_if_any()
        return accepted

    def _check_tagged_value(self, item: dict, where: str, params: _Params) -> None:
        has_value, has_count = "value" in item, "count" in item
        summary_keys = [k for k in TAGGED_SUMMARY_KEYS if k in item]
        if has_value and has_count:
            params.add("value", f"{where}: give either 'value' or 'count' with 'sum', not both")
        elif not has_value and not has_count:
            params.add("value", f"{where}: is not present (give 'value', or 'count' and 'sum')")
        elif has_value:
            problem = _number_problem(item["value"])
            if problem:
                params.add("value", f"{where}: value {problem}")
            for key in summary_keys:
                params.add(key, f"{where}: '{key}' is only allowed with 'count'")
        else:
            self._check_summary(item, TAGGED_SUMMARY_KEYS, where, params)
            if "stddev" in item and "stddev_m2" in item:
                params.add("stddev", f"{where}: only one of stddev and stddev_m2 may be set")

    @staticmethod
    def _check_tags(tags: Any, where: str, params: _Params, allow_null: bool) -> bool:
        if not isinstance(tags, dict):
            params.add("tags", f"{where}: tags must be an object")
            return False
        ok = True
        for name, value in tags.items():
            if not TAG_NAME_RE.fullmatch(name):
                params.add("tags", f"{where}: tag name {name!r} must be 1-64 characters of A-Za-z0-9_.:-")
                ok = False
            if value is None and allow_null:
                continue
            if not isinstance(value, str) or not TAG_VALUE_RE.fullmatch(value):
                params.add(
                    "tags",
                    f"{where}: tag {name!r}: value {value!r} must be a string of "
                    f"1-255 characters of A-Za-z0-9_.:- and space",
                )
                ok = False
        return ok


def _check_status(status: int) -> None:
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status: {status!r}")


def _injected_body(status: int) -> dict:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return {"errors": {"request": [f"{phrase} (FakeLibrato failure injection)"]}}


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple, handler: type, fake: FakeLibrato) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut open connections, so kept-alive clients see the server go away."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session uses it
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # every method goes through _dispatch
    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def _dispatch(self) -> None:
        fake = self.server.fake
        # The path as sent: http.server turns a leading "//" into "/", which
        # would hide a backend that joins its base URL badly.
        words = self.requestline.split()
        raw_path = words[1] if len(words) >= 2 else self.path
        path = raw_path.split("?", 1)[0]
        raw = b""
        accepted: list[dict] = []
        received = time.monotonic()
        try:
            raw = self._read_body()
            if path not in (LEGACY_PATH, TAGGED_PATH):
                raise _request_error(404, f"Not Found: {self.command} {path}")
            if self.command != "POST":
                raise _request_error(405, f"Method Not Allowed: {self.command} {path}", headers=(("Allow", "POST"),))
            injected = fake._take_injection()
            if injected and injected[0] == "delay":
                fake._stopping.wait(injected[1])
                raise _request_error(504, "Gateway Timeout (FakeLibrato.delay_next): nothing was accepted")
            if injected:
                _, status, body, headers = injected
                raise _Rejection(status, body if body is not None else _injected_body(status), headers)
            fake._check_auth(self.headers.get("Authorization"))
            tagged = path == TAGGED_PATH
            if tagged and not fake.tags_enabled:
                raise _request_error(403, "Tagged measurements are not enabled for this account")
            self._check_content_headers()
            payload = self._parse_json(raw)
            if tagged:
                accepted = fake._validate_tagged(payload)
                status, response = (
                    202,
                    {
                        "measurements": {
                            "summary": {"total": len(accepted), "accepted": len(accepted), "failed": 0, "filtered": 0}
                        }
                    },
                )
            else:
                accepted = fake._validate_legacy(payload)
                status, response = 200, None
            headers: tuple = ()
        except _Rejection as rejection:
            accepted = []
            status, response, headers = rejection.status, rejection.body, rejection.headers
            if rejection.close:
                self.close_connection = True
        except Exception as exc:  # a bug in the fake: say so loudly, accept nothing
            accepted = []
            status, response, headers = 500, {"errors": {"system": [f"FakeLibrato bug: {exc!r}"]}}, ()
        fake._record(
            {
                "method": self.command,
                "path": raw_path,
                "status": status,
                "headers": dict(self.headers.items()),
                "body": _decode_for_record(raw),
                "response": copy.deepcopy(response),
                "received": received,
            },
            accepted,
        )
        self._respond(status, response, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command in ("POST", "PUT", "PATCH"):
                raise _request_error(411, "Length Required", close=True)
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _request_error(400, f"Invalid Content-Length: {length!r}", close=True) from None
        if size < 0:
            raise _request_error(400, f"Invalid Content-Length: {length!r}", close=True)
        if size > MAX_BODY_BYTES:
            raise _request_error(413, "Request Entity Too Large", close=True)
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        try:
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                if len(body) + size > MAX_BODY_BYTES:
                    raise _request_error(413, "Request Entity Too Large", close=True)
                body += self.rfile.read(size)
                self.rfile.readline()
        except ValueError:
            raise _request_error(400, "Malformed chunked body", close=True) from None

    def _check_content_headers(self) -> None:
        content_type = self.headers.get("Content-Type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise _request_error(415, f"Content-Type must be application/json, got {content_type!r}")
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _request_error(415, f"Content-Encoding {encoding!r} is not supported")

    @staticmethod
    def _parse_json(raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _request_error(400, "The body is not UTF-8") from None
        try:
            return json.loads(text, parse_constant=_reject_json_constant)
        except ValueError as exc:
            raise _request_error(400, f"The body is not valid JSON: {exc}") from None

    def _respond(self, status: int, body: dict | None, headers: tuple) -> None:
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) or the server is stopping
            self.close_connection = True


def _decode_for_record(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
