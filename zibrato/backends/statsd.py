"""zibrato-statsd: forward each flush to a statsd server, so that statsd's own statistics stay exact.

Mapping (see docs/STATSD.md), one interval at a time:

* counter: one ``name:sum|c`` line, the interval's sum;
* gauge: ``name:value|g``, the last value; a negative value is preceded by
  ``name:0|g`` in the same datagram, because statsd reads a leading ``-``
  as a delta when the gauge exists and is not zero;
* timer: every value as ``name:ms|ms`` in milliseconds, so that statsd's
  count, mean, upper, lower and percentiles are computed from the real values.
  Past ``max_samples`` values per series and interval (the worker's
  ``--max-samples``), the aggregator's uniform sample is sent instead, each
  line marked ``|@rate`` with rate = values sent / values received, so that
  statsd scales the count back.

The source becomes a name prefix (``source.name``) or a DogStatsD tag; tags
are DogStatsD ``|#k:v`` tags or dropped. Names are fitted to Etsy statsd's
rules (:class:`Sanitiser`), each change logged once; prefix, source and name
are joined with single dots, never leaving an empty part (``..x``). Lines are
packed into datagrams of at most ``mtu`` bytes.

Delivery: UDP is fire-and-forget: a send never blocks, and what cannot be
sent is counted and logged (rate-limited), never retried. TCP keeps one
connection and retries a failed interval with backoff (as the Librato worker
does) while later intervals wait in the worker's backlog, so a statsd outage
loses nothing within the backlog.
"""
from __future__ import annotations

import errno
import random
import re
import select
import socket
import time as _time
from collections import deque
from decimal import Decimal
from typing import Iterable, Iterator

from ..runtime import RateLimitedLog
from ..worker import Backend

PROTOCOLS = ("udp", "tcp")
SOURCE_MODES = ("prefix", "tag")
TAG_MODES = ("drop", "dogstatsd")
DEFAULT_MTU = 1432  # Etsy's advice for a LAN; 8932 with jumbo frames, 512 across the internet
MAX_UDP_PAYLOAD = 65507
STREAM_CHUNK = 65536  # bytes per TCP write; lines are never split across writes

# Etsy statsd 0.9.0 (stats.js, sanitizeKeyName): whitespace runs -> "_", "/" -> "-",
# then anything outside [a-zA-Z_\-0-9.;=] is dropped.
_WHITESPACE = re.compile(r"\s+")
_NOT_IN_NAME = re.compile(r"[^a-zA-Z_\-0-9.;=]")
_DOT_RUNS = re.compile(r"\.{2,}")
# DogStatsD tags: "k:v" stays; the line's separators ("|", ",", "#", "@") and control characters go.
_NOT_IN_TAG = re.compile(r"[|,#@\x00-\x1f\x7f]")
_MAX_REMEMBERED_NAMES = 100_000
_LOG_EVERY_N_FAILURES = 10


class StatsdBackend(Backend):
    """The statsd worker: ``zibrato-statsd``.

    ``backoff_base`` and ``backoff_cap`` (seconds) shape TCP's retry delays:
    base, 2 x base, 4 x base ... up to the cap, each with jitter (between half
    the delay and the whole of it). ``timeout`` bounds a TCP connect or write.
    """

    name = "statsd"
    self_figures = ("lines_sent", "datagrams_sent", "send_errors", "lines_lost")

    def __init__(self, *args, statsd_host: str = "127.0.0.1", statsd_port: int = 8125,
                 protocol: str = "udp", prefix: str = "", mtu: int = DEFAULT_MTU,
                 source_as: str = "prefix", tags: str = "drop", timeout: float = 5.0,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, **kwargs) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (udp or tcp)")
        if source_as not in SOURCE_MODES:
            raise ValueError(f"unknown --source-as {source_as!r} (prefix or tag)")
        if tags not in TAG_MODES:
            raise ValueError(f"unknown --tags {tags!r} (drop or dogstatsd)")
        if not 1 <= statsd_port <= 65535:
            raise ValueError(f"statsd port {statsd_port} is outside 1-65535")
        if not 64 <= mtu <= MAX_UDP_PAYLOAD:
            raise ValueError(f"mtu {mtu} is outside 64-{MAX_UDP_PAYLOAD} bytes")
        if timeout <= 0 or backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("timeout and backoff must be positive (cap >= base)")
        super().__init__(*args, **kwargs)
        self.aggregator.keep_values = True  # timers are sent value by value
        self.statsd_host, self.statsd_port, self.protocol = statsd_host, statsd_port, protocol
        self.mtu, self.source_as, self.tag_mode = mtu, source_as, tags
        self.timeout, self.backoff_base, self.backoff_cap = timeout, backoff_base, backoff_cap
        self.names = Sanitiser(self.log)
        # "app." is the documented form of the prefix "app": not a change worth a warning
        self.prefix = self.names.name(prefix.removesuffix("."), "prefix") if prefix else ""
        self.sock: socket.socket | None = None
        self._send_log = RateLimitedLog(self.log)
        self._warned: set[str] = set()  # one-time warnings already given
        self._failures = 0  # consecutive failed TCP attempts, across intervals
        self._failing_since: float | None = None
        self._last_post_errors = 0
        self._random = random.Random()
        self.figures_.update(lines_sent=0, datagrams_sent=0, bytes_sent=0, send_errors=0,
                             lines_lost=0, names_changed=0, oversized_lines=0,
                             timer_values_dropped=0, reconnects=0, last_error=None)

    @property
    def endpoint(self) -> str:
        return f"{self.protocol}://{self.statsd_host}:{self.statsd_port}"

    # --- Backend extension points -------------------------------------------

    def connect(self) -> None:
        self.log.info("sending to statsd at %s (%s, source as %s, tags %s)", self.endpoint,
                      f"datagrams of at most {self.mtu} bytes" if self.protocol == "udp"
                      else "one persistent connection", self.source_as,
                      "as DogStatsD tags" if self.tag_mode == "dogstatsd" else "dropped")
        if self.protocol == "udp":
            self._open_udp()
        else:
            self._open_tcp()

    def post(self, time: float, summaries: list[dict]) -> None:
        """Deliver one interval: UDP at once (never blocking), TCP until sent or given up at stop."""
        units = self.lines(summaries)
        if not units:
            return
        if self.protocol == "udp":
            self._post_datagrams(pack(units, self.mtu))
        else:
            self._post_stream(time, pack(units, STREAM_CHUNK - 1))

    def close(self) -> None:
        f = self.figures_
        self.log.info("%d lines sent to statsd at %s in %d %s (%d send errors, %d lines lost)",
                      f["lines_sent"], self.endpoint, f["datagrams_sent"],
                      "datagrams" if self.protocol == "udp" else "writes", f["send_errors"],
                      f["lines_lost"])
        self._close_socket()

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def figures(self) -> dict:
        f = super().figures()
        if self._failing_since is not None:
            failing = _time.monotonic() - self._failing_since
            f["problems"].append(f"statsd delivery failing for {failing:.0f} s ({f['last_error']})")
            f["healthy"] = False
        elif self._last_post_errors:
            f["problems"].append(f"{self._last_post_errors} send errors in the last flush "
                                 f"({f['last_error']}): is statsd running at {self.endpoint}?")
            f["healthy"] = False
        f.update(statsd=self.endpoint, protocol=self.protocol, mtu=self.mtu)
        return f

    # --- mapping --------------------------------------------------------------

    def lines(self, summaries: Iterable[dict]) -> list[bytes]:
        """The statsd lines for one interval, grouped in units that must share a datagram.

        A unit is one line, or the two lines of a negative gauge (``0|g`` then
        the value), joined by a newline.
        """
        units: list[bytes] = []
        for s in summaries:
            name, suffix = self._name_and_suffix(s)
            kind = s["type"]
            if kind == "counter":
                units.append(f"{name}:{number(s['value'])}|c{suffix}".encode())
            elif kind == "gauge":
                value = s["value"]
                line = f"{name}:{number(value)}|g{suffix}"
                units.append((f"{name}:0|g{suffix}\n{line}" if value < 0 else line).encode())
            elif kind == "timer":
                units.extend(self._timer_lines(s, name, suffix))
        self.figures_["names_changed"] = self.names.changed
        return units

    def _timer_lines(self, s: dict, name: str, suffix: str) -> Iterator[bytes]:
        values = s.get("values")
        if values is None:  # pragma: no cover - the aggregator is built with keep_values
            self._warn_once("no-values", "timer %r has no raw values (keep_values is off): "
                                         "timers are not sent", s["name"])
            return
        rate = ""
        if s.get("sampled") and len(values) < s["count"]:
            rate = "|@" + sample_rate(len(values) / s["count"])
        head, tail = f"{name}:", f"|ms{rate}{suffix}"
        negative = 0
        for value in values:
            if value < 0:  # statsd rejects negative timings as bad lines
                negative += 1
                continue
            yield (head + milliseconds(value) + tail).encode()
        if negative:
            self.figures_["timer_values_dropped"] += negative
            self._send_log.warning("timer %s: dropped %d negative values (statsd takes "
                                   "timings >= 0)", s["name"], negative)

    def _name_and_suffix(self, s: dict) -> tuple[str, str]:
        """``prefix[source.]name`` and the ``|#tags`` suffix (possibly empty) of a series."""
        name = self.names.name(s["name"])
        source = s.get("source")
        source_part = ""
        tags: list[str] = []
        if source:
            if self.source_as == "prefix":
                source_part = self.names.name(source, "source")
            else:
                tags.append(self.names.tag("source:" + source))
        if s.get("tags"):
            if self.tag_mode == "dogstatsd":
                tags.extend(self.names.tag(t) for t in s["tags"])
            else:
                self._warn_once("tags", "series %r has tags %s: tags are dropped (use --tags "
                                        "dogstatsd to send them as |#k:v)",
                                s["name"], ",".join(s["tags"]))
        name = ".".join(part for part in (self.prefix, source_part, name) if part)
        tags = [t for t in tags if t]
        return name, ("|#" + ",".join(tags)) if tags else ""

    # --- UDP ------------------------------------------------------------------

    def _open_udp(self) -> None:
        self._close_socket()
        family, _, _, _, address = socket.getaddrinfo(self.statsd_host, self.statsd_port,
                                                      type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(address)  # resolve once; lets the kernel report refused datagrams
        self.sock = sock

    def _post_datagrams(self, datagrams: list[tuple[bytes, int]]) -> None:
        f = self.figures_
        errors = 0
        if self.sock is None:
            try:
                self._open_udp()
            except OSError as error:
                f["send_errors"] += 1
                f["lines_lost"] += sum(n for _, n in datagrams)
                self._last_post_errors = 1
                f["last_error"] = f"cannot resolve or reach {self.endpoint}: {error}"
                raise OSError(f["last_error"]) from None
        for datagram, lines in datagrams:
            self._check_size(datagram, lines)
            for attempt in (1, 2):
                try:
                    self.sock.send(datagram)
                except ConnectionRefusedError as error:
                    # An earlier datagram was refused (ICMP port unreachable): the kernel reports
                    # it on this send, which then did not go out. Once more, then it is lost.
                    errors += 1
                    f["send_errors"] += 1
                    f["last_error"] = str(error)
                    if attempt == 2:
                        f["lines_lost"] += lines
                    continue
                except OSError as error:  # EAGAIN (buffer full), ENOBUFS, EMSGSIZE ...
                    errors += 1
                    f["send_errors"] += 1
                    f["lines_lost"] += lines
                    f["last_error"] = str(error)
                    break
                f["datagrams_sent"] += 1
                f["lines_sent"] += lines
                f["bytes_sent"] += len(datagram)
                break
        self._last_post_errors = errors
        if errors:
            self._send_log.warning("statsd at %s: %d send errors in this flush (%s); UDP is not "
                                   "retried (%d lines lost so far)", self.endpoint, errors,
                                   f["last_error"], f["lines_lost"])

    def _check_size(self, datagram: bytes, lines: int) -> None:
        if len(datagram) > self.mtu:
            self.figures_["oversized_lines"] += 1
            self._warn_once("oversized", "a line of %d bytes does not fit --mtu %d: sent alone, "
                                         "it may be fragmented or dropped (%r...)",
                            len(datagram), self.mtu, datagram[:80])

    # --- TCP ------------------------------------------------------------------

    def _open_tcp(self) -> None:
        self._close_socket()
        timeout = self._io_timeout()
        if timeout is None:
            raise TimeoutError("stop deadline reached")
        sock = socket.create_connection((self.statsd_host, self.statsd_port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def _post_stream(self, time: float, chunks: list[tuple[bytes, int]]) -> None:
        pending = deque(chunks)
        while pending:
            chunk, lines = pending[0]
            try:
                self._write(chunk + b"\n")
            except OSError as error:
                self._close_socket()
                if not self._wait_to_retry(error):
                    self._give_up(time, pending)
                    return
                continue
            pending.popleft()
            self._recovered()
            f = self.figures_
            f["datagrams_sent"] += 1
            f["lines_sent"] += lines
            f["bytes_sent"] += len(chunk) + 1

    def _write(self, payload: bytes) -> None:
        """Write on the connection, opened anew if statsd closed it (statsd never writes back)."""
        if self.sock is not None and _peer_closed(self.sock):
            self.log.info("statsd at %s closed the connection; reconnecting", self.endpoint)
            self.figures_["reconnects"] += 1
            self._close_socket()
        if self.sock is None:
            self._open_tcp()
        timeout = self._io_timeout()
        if timeout is None:
            raise TimeoutError("stop deadline reached")
        self.sock.settimeout(timeout)
        self.sock.sendall(payload)

    def _io_timeout(self) -> float | None:
        """The connect/write timeout; while stopping, no longer than what is left (None: nothing)."""
        if not self.stopping.is_set() or self.stop_deadline is None:
            return self.timeout
        left = self.stop_deadline - _time.monotonic()
        return min(self.timeout, left) if left > 0.05 else None

    def _wait_to_retry(self, error: OSError) -> bool:
        """Count the failure, log it, sleep the backoff delay; False when it is time to give up."""
        f = self.figures_
        f["send_errors"] += 1
        f["last_error"] = f"{self.endpoint}: {_describe(error)}"
        if self._failing_since is None:
            self._failing_since = _time.monotonic()
        self._failures += 1
        delay = self.backoff_delay(self._failures)
        if self.stopping.is_set():
            left = (self.stop_deadline or 0) - _time.monotonic()
            if left <= 0.1:
                return False
            delay = min(delay, left / 2)
        if self._failures == 1 or self._failures % _LOG_EVERY_N_FAILURES == 0:
            self.log.warning("cannot send to statsd at %s: %s (attempt %d failed; retrying in "
                             "%.2g s, later flushes keep aggregating)", self.endpoint,
                             _describe(error), self._failures, delay)
        else:
            self.log.debug("statsd %s: %s; retrying in %.2g s", self.endpoint, error, delay)
        self.stopping.wait(delay)
        return True

    def backoff_delay(self, failures: int) -> float:
        """Exponential backoff with jitter: between half and all of min(cap, base x 2^(n-1))."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 60))
        return self._random.uniform(delay / 2, delay)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            self.log.info("statsd delivery recovered after %d failed attempts over %.1f s",
                          self._failures, _time.monotonic() - self._failing_since)
        self._failures, self._failing_since = 0, None

    def _give_up(self, time: float, pending: deque) -> None:
        lost = sum(lines for _, lines in pending)
        self.figures_["lines_lost"] += lost
        self.log.error("stop deadline reached: gave up the interval at %s, %d lines not delivered "
                       "(last error: %s)", _iso(time), lost, self.figures_["last_error"])

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(message, *args)


class Sanitiser:
    """Fits names to Etsy statsd's rules and tags to DogStatsD's; logs each changed one once.

    Names: whitespace runs become ``_``, ``/`` becomes ``-``, and anything outside
    ``a-z A-Z 0-9 _ - . ; =`` is dropped (what Etsy statsd would do, so that
    ``:``, ``|``, ``@``, ``#``, newlines and spaces never reach the wire).
    Runs of dots become one and leading or trailing dots go, so that joining
    prefix, source and name never leaves an empty part (Graphite's ``a..b``).
    Tags keep ``k:v`` but lose ``|``, ``,``, ``#``, ``@`` and control characters;
    whitespace runs become ``_``.
    """

    def __init__(self, log) -> None:
        self.log = log
        self.changed = 0
        self._seen: dict[tuple[str, str], str] = {}

    def name(self, text: str, kind: str = "name") -> str:
        return self._fix(kind, text)

    def tag(self, text: str) -> str:
        return self._fix("tag", text)

    def _fix(self, kind: str, text: str) -> str:
        key = (kind, text)
        fixed = self._seen.get(key)
        if fixed is None:
            spaced = _WHITESPACE.sub("_", text)
            if kind == "tag":
                fixed, rule = _NOT_IN_TAG.sub("", spaced), "DogStatsD tags cannot hold | , # @"
            else:
                fixed = _tidy_dots(_NOT_IN_NAME.sub("", spaced.replace("/", "-")))
                if kind == "name" and not fixed:
                    fixed = "_"  # a line needs a name
                rule = "statsd names are made of A-Z a-z 0-9 _ - . ; =, with no empty part between dots"
            if len(self._seen) >= _MAX_REMEMBERED_NAMES:
                self._seen.clear()
            self._seen[key] = fixed
            if fixed != text:
                self.changed += 1
                self.log.warning("%s %r does not fit statsd's rules (%s): sent as %r",
                                 kind, text, rule, fixed)
        return fixed


def pack(units: list[bytes], limit: int) -> list[tuple[bytes, int]]:
    """Join units with newlines into payloads of at most ``limit`` bytes, in order.

    Returns ``(payload, lines)`` pairs. A unit longer than ``limit`` travels
    alone (the caller logs it); units are never split.
    """
    payloads: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = lines = 0
    for unit in units:
        length = len(unit)
        if current and size + 1 + length > limit:
            payloads.append((b"\n".join(current), lines))
            current, size, lines = [], 0, 0
        size += length + (1 if current else 0)
        current.append(unit)
        lines += unit.count(b"\n") + 1
    if current:
        payloads.append((b"\n".join(current), lines))
    return payloads


def number(value: float) -> str:
    """A counter's or gauge's value as statsd reads it: no exponent, no ``-0``, ``.0`` dropped."""
    if value == 0:
        return "0"  # also -0.0, which statsd would take for a delta
    if isinstance(value, int):
        return str(int(value))  # int() turns a bool into 0/1
    return _plain(repr(float(value)))


def milliseconds(seconds: float) -> str:
    """Seconds as statsd's milliseconds, to 15 significant digits.

    15 digits drop the binary noise of the multiplication (0.007 * 1000 is
    7.000000000000001) and keep every digit a double carries for sure.
    """
    if seconds == 0:
        return "0"  # also -0.0, which would be written "-0"
    return _plain(format(seconds * 1000, ".15g"))


def sample_rate(rate: float) -> str:
    """The ``@`` rate in plain decimals: Etsy reads ``@1e-05`` as 1 (it matches ``[\\d.]+``)."""
    return format(Decimal(repr(float(rate))), "f")


def _plain(text: str) -> str:
    """``1e+16`` -> ``10000000000000000``, ``5e-05`` -> ``0.00005``, ``3.0`` -> ``3``.

    Always positional, however long (309 digits for the largest double, about
    330 characters for the smallest): Etsy's ``Number()`` reads it exactly, and
    no statsd parser has to know exponents (Etsy's own sample-rate pattern
    reads ``1e-05`` as 1).
    """
    if "e" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _tidy_dots(text: str) -> str:
    """``.a..b.`` -> ``a.b``: no empty part between dots, none at either end."""
    return _DOT_RUNS.sub(".", text).strip(".")


def _peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed or reset the connection (statsd never sends anything)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return not sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _describe(error: OSError) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    if error.errno == errno.ECONNREFUSED:
        return "connection refused (is statsd running?)"
    return str(error) or error.__class__.__name__


def _iso(timestamp: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(timestamp))
