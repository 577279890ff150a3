"""The instrumentation client: what application code imports.

The hot path of every measurement is one attribute lookup and one
``deque.append`` of a ``(series, value)`` pair: no lock, no I/O, no
encoding. A background sender thread, started by the first measurement,
drains the deque every ``interval`` seconds (50 ms by default), groups the
values per series, encodes one message per level (:mod:`zibrato.protocol`)
and hands it to a ZeroMQ PUSH socket without blocking. Whatever ZeroMQ will
not take (its high-water mark is full because the broker has been away too
long) is dropped and counted in :attr:`Zibrato.dropped`; nothing the
transport does ever raises into the application.

Misuse, on the other hand, raises at once: a missing level or name, a
non-numeric value, an unrepresentable name.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import zmq

from . import protocol
from .protocol import COUNTER, GAUGE, TIMER

__all__ = ["Zibrato", "DEFAULT_HOST", "DEFAULT_PORT"]

log = logging.getLogger("zibrato.client")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5550
F = TypeVar("F", bound=Callable[..., Any])
Tags = Mapping[str, object] | Iterable[str] | None
Series = tuple  # (level, type, name, source, tags)

_INT64_MIN, _UINT64_LIMIT = -(1 << 63), 1 << 64  # the integers msgpack can carry
_MAX_CACHED_SERIES = 10_000
_perf_counter = time.perf_counter


class Zibrato:
    """A client that publishes measurements to a Zibrato broker.

    ``host`` and ``port`` default to ``$ZIBRATO_HOST`` / ``$ZIBRATO_PORT``,
    then 127.0.0.1:5550. ``source`` and ``tags`` apply to every measurement
    (a measurement's own ``source`` wins, tags are merged). ``hwm`` is how
    many messages ZeroMQ queues while the broker is unreachable (each holds at
    most ``batch`` measurements, and one is sent per level per ``interval``);
    beyond it measurements are dropped and counted in :attr:`dropped`. So at
    most ``hwm`` x ``batch`` measurements wait for a broker (by default
    10 million, about 90 MB when every message is full; a quiet application
    fills far less). ``max_message_size`` matches the broker's limit: a bigger
    message is split, and one that cannot be is dropped and counted.
    ``linger`` bounds how long closing (and interpreter exit) waits for
    queued messages to reach the broker.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        context: zmq.Context | None = None,
        source: str | None = None,
        tags: Tags = None,
        *,
        interval: float = 0.05,
        hwm: int = 10_000,
        batch: int = 1_000,
        linger: float = 1.0,
        max_message_size: int = protocol.MAX_MESSAGE_SIZE,
    ) -> None:
        self.host = host or os.environ.get("ZIBRATO_HOST") or DEFAULT_HOST
        self.port = _port(port if port is not None else os.environ.get("ZIBRATO_PORT") or DEFAULT_PORT)
        self.source = None if source is None else _check_name(source, "source")
        self.tags = _normalise_tags(tags)
        if interval <= 0 or hwm < 1 or batch < 1 or linger < 0 or max_message_size < 1024:
            raise ValueError("interval, hwm, batch and linger must be positive, "
                             "max_message_size at least 1024")
        self.interval, self.hwm, self.batch, self.linger = interval, hwm, batch, linger
        self.max_message_size = max_message_size
        self._context = context
        self._owns_context = False
        #: measurements dropped because ZeroMQ could not queue them
        self.dropped = 0
        #: measurements handed to ZeroMQ
        self.sent = 0
        self._series_cache: dict[tuple, Series] = {}
        self._instrument_cache: dict[tuple, _Instrument] = {}
        self._pending: deque = deque()
        self._sender: _Sender | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._no_sender_reported = False  # a sender that cannot start is logged once
        self._record: Callable[[tuple], None] = self._start_sender_and_record
        _live_clients.add(self)

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    # --- instruments -----------------------------------------------------

    def time_me(self, level: str, name: str, source: str | None = None, tags: Tags = None,
                outcome: bool = False) -> "Timer":
        """Decorator that records how long each call takes, in seconds."""
        return Timer(self, level, name, source, tags, outcome)

    def Time_me(self, level: str, name: str, source: str | None = None, tags: Tags = None,
                outcome: bool = False) -> "_Block":
        """Context manager that records how long its block takes, in seconds."""
        return _Block(self._cached_instrument(Timer, level, name, source, tags, outcome))

    def count_me(self, level: str, name: str, value: float = 1, source: str | None = None,
                 tags: Tags = None, outcome: bool = False) -> "Counter":
        """Decorator that adds ``value`` to a counter on every call."""
        return Counter(self, level, name, value, source, tags, outcome)

    def Count_me(self, level: str, name: str, value: float = 1, source: str | None = None,
                 tags: Tags = None, outcome: bool = False) -> "_Block":
        """Context manager that adds ``value`` to a counter for its block."""
        return _Block(self._cached_instrument(Counter, level, name, source, tags, outcome, value))

    def count(self, level: str, name: str, value: float = 1, source: str | None = None,
              tags: Tags = None) -> None:
        """Add ``value`` to a counter."""
        self._record((self._cached_series(level, COUNTER, name, source, tags), _number(value)))

    def gauge(self, level: str, name: str, value: float, source: str | None = None,
              tags: Tags = None) -> None:
        """Set a gauge to ``value`` (the last value of an interval wins)."""
        self._record((self._cached_series(level, GAUGE, name, source, tags), _number(value)))

    def timing(self, level: str, name: str, seconds: float, source: str | None = None,
               tags: Tags = None) -> None:
        """Record a duration measured elsewhere, in seconds."""
        seconds = _number(seconds)
        if seconds < 0:
            raise ValueError(f"timing {name!r}: negative duration {seconds}")
        self._record((self._cached_series(level, TIMER, name, source, tags), seconds))

    # --- lifecycle -------------------------------------------------------

    def flush(self, timeout: float = 1.0) -> bool:
        """Hand every measurement recorded so far to ZeroMQ now.

        Returns False if the sender did not finish within ``timeout``.
        Delivery to the broker then proceeds in ZeroMQ's I/O thread.
        """
        sender = self._sender
        if sender is None:
            return not self._pending
        return sender.drain_now(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is pending, wait up to ``linger`` for delivery, release sockets.

        Measurements recorded after close() are dropped and counted.
        """
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            self._record = self._drop
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop(self.linger + 1.0 if timeout is None else timeout)
            if sender.is_alive():  # still draining: it counts what it takes
                _live_clients.discard(self)
                return
        self._drop_pending()
        _live_clients.discard(self)

    def _drop_pending(self) -> None:
        """Count what will never be sent, one by one: an append may race with us."""
        pending = self._pending
        while pending:
            try:
                pending.popleft()
            except IndexError:
                break
            self.dropped += 1

    def __enter__(self) -> "Zibrato":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Zibrato {self.endpoint} sent={self.sent} dropped={self.dropped}>"

    # --- internals -------------------------------------------------------

    def series(self, level: str, type: str, name: str, source: str | None = None,
               tags: Tags = None) -> Series:
        """Validate a series once and return its hashable key (raises on misuse)."""
        if not protocol.is_valid_level(level):
            raise ValueError(f"level must be 1-64 characters of A-Z a-z 0-9 _ . -, got {level!r}")
        name = _check_name(name, "name")
        source = self.source if source is None else _check_name(source, "source")
        merged = tuple(sorted(set(self.tags).union(_normalise_tags(tags)))) if tags else self.tags
        return (level, type, name, source, merged)

    def _cached_series(self, level: str, type: str, name: str, source: str | None,
                       tags: Tags) -> Series:
        """series() for the direct calls, cached so that repeated calls skip validation."""
        try:
            return self._series_cache[level, type, name, source, tags]
        except (KeyError, TypeError):  # TypeError: tags given as an unhashable mapping
            key = self.series(level, type, name, source, tags)
            if len(self._series_cache) >= _MAX_CACHED_SERIES:
                self._series_cache.clear()
            try:
                self._series_cache[level, type, name, source, tags] = key
            except TypeError:
                pass
            return key

    def _cached_instrument(self, kind: type, level: str, name: str, source: str | None,
                           tags: Tags, outcome: bool, *value: float) -> "_Instrument":
        """One validated instrument per distinct ``with`` statement, reused by every block."""
        key = (kind, level, name, source, tags, outcome, *value)
        try:
            return self._instrument_cache[key]
        except (KeyError, TypeError):  # TypeError: unhashable tags, validated every time
            if kind is Timer:
                instrument = Timer(self, level, name, source, tags, outcome)
            else:
                instrument = Counter(self, level, name, *value, source, tags, outcome)
            if len(self._instrument_cache) >= _MAX_CACHED_SERIES:
                self._instrument_cache.clear()
            try:
                self._instrument_cache[key] = instrument
            except TypeError:
                pass
            return instrument

    def _start_sender_and_record(self, item: tuple) -> None:
        """The first measurement (in this process) starts the sender, then takes the fast path."""
        with self._start_lock:
            if self._closed:
                self._drop(item)
                return
            if self._sender is None:
                sender = _Sender(self)
                try:
                    sender.start()
                except RuntimeError as error:  # no threads left, or interpreter shutting down
                    self._report_no_sender(error)
                    self._drop(item)
                    return  # the next measurement tries again
                self._sender = sender
                self._record = self._pending.append
        self._pending.append(item)

    def _report_no_sender(self, error: RuntimeError) -> None:
        if not self._no_sender_reported:
            self._no_sender_reported = True
            log.error("zibrato: cannot start the sender thread (%s); measurements are dropped "
                      "and counted until it can", error)

    def _drop(self, item: tuple) -> None:
        self.dropped += 1

    def _after_fork_in_child(self) -> None:
        """The child inherits a copy of the parent's queue and no sender thread.

        The parent still sends its own queue, so the child forgets it (no double
        counting) and starts its own sender and sockets at its first measurement.
        Nothing here may log or take the inherited locks.
        """
        self._pending.clear()
        self._start_lock = threading.Lock()
        self._sender = None
        self.sent = self.dropped = 0
        self._context = None  # a context made before fork is unusable in the child
        self._owns_context = False
        if not self._closed:
            self._record = self._start_sender_and_record


class _Sender(threading.Thread):
    """Owns the PUSH socket (sockets are not thread-safe) and drains the client's queue."""

    def __init__(self, client: Zibrato) -> None:
        super().__init__(name="zibrato-sender", daemon=True)
        self.client = client
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._requested = self._completed = 0
        self._stopping = False
        self._failing = False
        if "multiprocessing" in sys.modules and _in_forked_child():
            _flush_at_multiprocessing_exit(client)

    def drain_now(self, timeout: float) -> bool:
        with self._done:
            self._requested += 1
            wanted = self._requested
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._completed >= wanted, timeout)

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        client = self.client
        socket = self._open_socket()
        try:
            while True:
                self._wake.wait(client.interval)
                self._wake.clear()
                # Read before draining: a stop requested during the drain gets one more
                # drain, for what was recorded after this one's snapshot of the queue.
                stopping = self._stopping
                with self._done:
                    wanted = self._requested
                try:
                    self._drain(socket)
                except Exception:  # pragma: no cover - a bug here must not kill the sender
                    log.exception("zibrato: sender failed to drain measurements")
                with self._done:
                    self._completed = wanted
                    self._done.notify_all()
                if stopping:
                    return
        finally:
            if socket is not None:
                socket.close(linger=int(client.linger * 1000))
            if client._owns_context and client._context is not None:
                client._context.term()
                client._context = None

    def _open_socket(self) -> zmq.Socket | None:
        client = self.client
        try:
            if client._context is None:
                client._context = zmq.Context(io_threads=1)
                client._owns_context = True
            socket = client._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, client.hwm)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            socket.setsockopt(zmq.LINGER, int(client.linger * 1000))
            socket.connect(client.endpoint)
            return socket
        except Exception as error:  # a bad host string, no file descriptors left...
            log.error("zibrato: cannot connect to %s (%s); measurements will be dropped and counted",
                      client.endpoint, error)
            return None

    def _drain(self, socket: zmq.Socket | None) -> None:
        client = self.client
        pending = client._pending
        count = len(pending)
        if not count:
            return
        pop = pending.popleft
        grouped: dict[Series, list] = {}
        for _ in range(count):
            series, value = pop()
            values = grouped.get(series)
            if values is None:
                grouped[series] = [value]
            else:
                values.append(value)
        if socket is None:
            client.dropped += count
            return
        now = time.time()
        for level, records, size in _messages(grouped, client.batch):
            self._send(socket, level, now, records, size)

    def _send(self, socket: zmq.Socket, level: str, now: float, records: list, size: int) -> None:
        """Encode and queue one message; split one the broker would refuse as too large."""
        client = self.client
        try:
            frame = protocol.encode(level, now, records)
        except Exception as error:  # pragma: no cover - values are validated when recorded
            client.dropped += size
            log.error("zibrato: cannot encode %d measurements: %s; dropped and counted", size, error)
            return
        if len(frame) > client.max_message_size:
            halves = _split(records)
            if halves is None:
                client.dropped += size
                log.error("zibrato: one measurement of %r is %d bytes encoded, over the %d-byte "
                          "message limit; dropped and counted", records[0][1], len(frame),
                          client.max_message_size)
                return
            for half in halves:
                self._send(socket, level, now, half, sum(len(record[2]) for record in half))
            return
        try:
            socket.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as error:
            client.dropped += size
            self._report_failure(error)
        else:
            client.sent += size
            if self._failing:
                self._failing = False
                log.warning("zibrato: sending to %s again (%d measurements dropped so far)",
                            client.endpoint, client.dropped)

    def _report_failure(self, error: zmq.ZMQError) -> None:
        """Log the start of a failure once, not every message (logs must not flood)."""
        if not self._failing:
            self._failing = True
            reason = "buffer full, broker unreachable" if isinstance(error, zmq.Again) else error
            log.warning("zibrato: cannot queue measurements for %s (%s); dropping and counting them",
                        self.client.endpoint, reason)


def _messages(grouped: dict[Series, list], batch: int) -> Iterable[tuple[str, list, int]]:
    """Yield (level, records, measurement count) per message, at most ``batch`` values each."""
    by_level: dict[str, list] = {}
    for (level, type_, name, source, tags), values in grouped.items():
        by_level.setdefault(level, []).append((type_, name, values, source, tags))
    for level, records in by_level.items():
        chunk: list = []
        size = 0
        for type_, name, values, source, tags in records:
            for start in range(0, len(values), batch):
                part = values[start:start + batch] if len(values) > batch else values
                if size + len(part) > batch and chunk:
                    yield level, chunk, size
                    chunk, size = [], 0
                chunk.append((type_, name, part, source, tags))
                size += len(part)
        if chunk:
            yield level, chunk, size


def _is_async(func: Callable) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (a handler class)."""
    return inspect.iscoroutinefunction(func) or (
        not inspect.isroutine(func) and inspect.iscoroutinefunction(getattr(type(func), "__call__", None)))


def _split(records: list) -> tuple[list, list] | None:
    """Two halves of a message's records (or of its one record's values); None if one value."""
    if len(records) > 1:
        middle = len(records) // 2
        return records[:middle], records[middle:]
    type_, name, values, source, tags = records[0]
    if len(values) < 2:
        return None
    middle = len(values) // 2
    return [(type_, name, values[:middle], source, tags)], [(type_, name, values[middle:], source, tags)]


class _Instrument:
    """What Timer and Counter share: a validated series, outcome tagging, and wrappers.

    A subclass says what one measurement is with :meth:`_begin` (taken before
    the code runs) and :meth:`_value` (after); synchronous functions get a
    hand-inlined fast path per subclass, the rarer kinds share the wrappers here.
    """

    def __init__(self, client: Zibrato, level: str, type_: str, name: str,
                 source: str | None, tags: Tags, outcome: bool) -> None:
        self.client = client
        self.outcome = outcome
        self._plain = client._cached_series(level, type_, name, source, tags)
        self.series = _add_tags(self._plain, "outcome:ok") if outcome else self._plain
        self._error_series: dict[type, Series] = {}
        self._token: object = None

    def _begin(self) -> object:
        return None

    def _value(self, token: object) -> float:
        raise NotImplementedError

    def _series_for(self, error: BaseException | None) -> Series:
        """The series a call lands in: tagged outcome:error and the class when it raised."""
        if error is None or not self.outcome or isinstance(error, GeneratorExit):
            return self.series  # GeneratorExit: the caller stopped iterating early, not a failure
        kind = type(error)
        series = self._error_series.get(kind)
        if series is None:
            series = _add_tags(self._plain, "outcome:error", f"error:{kind.__name__}")
            self._error_series[kind] = series
        return series

    def _finish(self, token: object, error: BaseException | None) -> None:
        self.client._record((self._series_for(error), self._value(token)))

    def __call__(self, func: F) -> F:
        if _is_async(func):
            wrapper = self._wrap_coroutine(func)
        elif inspect.isasyncgenfunction(func):
            wrapper = self._wrap_async_generator(func)
        elif inspect.isgeneratorfunction(func):
            wrapper = self._wrap_generator(func)
        else:
            wrapper = self._wrap_function(func)
        return functools.wraps(func)(wrapper)  # type: ignore[return-value]

    def _wrap_function(self, func: Callable) -> Callable:
        def measured(*args, **kwargs):
            token, error = self._begin(), None
            try:
                return func(*args, **kwargs)
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)
        return measured

    def _wrap_coroutine(self, func: Callable) -> Callable:
        async def measured_coroutine(*args, **kwargs):
            token, error = self._begin(), None
            try:
                return await func(*args, **kwargs)
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)
        return measured_coroutine

    def _wrap_generator(self, func: Callable) -> Callable:
        def measured_generator(*args, **kwargs):
            token, error = self._begin(), None
            try:
                return (yield from func(*args, **kwargs))
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)
        return measured_generator

    def _wrap_async_generator(self, func: Callable) -> Callable:
        """Measures the whole iteration; values sent with asend() are passed through."""
        async def measured_async_generator(*args, **kwargs):
            token, error = self._begin(), None
            agen = func(*args, **kwargs)
            try:
                sent = None
                while True:
                    try:
                        item = await agen.asend(sent)
                    except StopAsyncIteration:
                        return
                    sent = yield item
            except BaseException as caught:
                error = caught
                raise
            finally:
                await agen.aclose()
                self._finish(token, error)
        return measured_async_generator

    def __enter__(self):
        self._token = self._begin()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        self._finish(self._token, error)
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        return self.__exit__(kind, error, tb)


class Timer(_Instrument):
    """Decorator and context manager that records elapsed seconds, also when the code raises.

    The decorator keeps its start time in a local variable, so one decorated
    function can run in many threads at once. A ``with`` block stores it on
    the instance: use a fresh ``z.Time_me(...)`` per block (as ``with`` does).
    """

    def __init__(self, client: Zibrato, level: str, name: str, source: str | None,
                 tags: Tags, outcome: bool) -> None:
        super().__init__(client, level, TIMER, name, source, tags, outcome)

    def _begin(self) -> float:
        return _perf_counter()

    def _value(self, start: float) -> float:
        return _perf_counter() - start

    def _wrap_function(self, func: Callable) -> Callable:
        if self.outcome:
            return super()._wrap_function(func)
        client, series = self.client, self.series

        def timed(*args, **kwargs):  # the hot path, inlined
            start = _perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                client._record((series, _perf_counter() - start))
        return timed


class Counter(_Instrument):
    """Decorator and context manager that adds ``value`` per call or block, also when it raises."""

    def __init__(self, client: Zibrato, level: str, name: str, value: float,
                 source: str | None, tags: Tags, outcome: bool) -> None:
        self.value = _number(value)
        super().__init__(client, level, COUNTER, name, source, tags, outcome)

    def _value(self, token: object) -> float:
        return self.value

    def _wrap_function(self, func: Callable) -> Callable:
        if self.outcome:
            return super()._wrap_function(func)
        client, series, value = self.client, self.series, self.value

        def counted(*args, **kwargs):  # the hot path, inlined
            try:
                return func(*args, **kwargs)
            finally:
                client._record((series, value))
        return counted


class _Block:
    """One ``with z.Time_me(...)`` / ``with z.Count_me(...)`` block: its own start, a shared instrument.

    Each block is a fresh object, so blocks may nest and run in many threads at once.
    """

    __slots__ = ("instrument", "token")

    def __init__(self, instrument: _Instrument) -> None:
        self.instrument = instrument

    def __enter__(self) -> "_Block":
        self.token = self.instrument._begin()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        self.instrument._finish(self.token, error)
        return False

    async def __aenter__(self) -> "_Block":
        return self.__enter__()

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        return self.__exit__(kind, error, tb)

    def __call__(self, func: F) -> F:
        """``@z.Time_me(...)`` works as a decorator too."""
        return self.instrument(func)


# --- validation ------------------------------------------------------------

def _add_tags(series: Series, *extra: str) -> Series:
    level, type_, name, source, tags = series
    return (level, type_, name, source, tuple(sorted(set(tags).union(extra))))


def _port(value: object) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"port must be an integer, got {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return port


def _check_name(name: object, what: str) -> str:
    problem = protocol.name_problem(name, what)
    if problem:
        raise ValueError(problem)
    return name  # type: ignore[return-value]


def _number(value: object) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise ValueError(f"value must be finite, got {value!r}")
    if type(value) is int:
        if _INT64_MIN <= value < _UINT64_LIMIT:
            return value
        try:
            return float(value)  # beyond 64 bits msgpack cannot carry it; a float can, rounded
        except OverflowError:
            raise ValueError(f"value must be finite, got an integer of {value.bit_length()} bits") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a number, got {value!r}")
    return _number(float(value))


def _normalise_tags(tags: Tags) -> tuple[str, ...]:
    """Tags as a sorted tuple of "key:value" strings (a mapping or strings accepted)."""
    if not tags:
        return ()
    if isinstance(tags, str):
        raise TypeError("tags must be a mapping or a list of 'key:value' strings, not one string")
    items = [f"{k}:{v}" for k, v in tags.items()] if isinstance(tags, Mapping) else list(tags)
    problem = protocol.tags_problem(items)
    if problem:
        raise ValueError(problem)
    return tuple(sorted(set(items)))


# --- process lifecycle -----------------------------------------------------

_live_clients: "weakref.WeakSet[Zibrato]" = weakref.WeakSet()
_main_pid = os.getpid()


def _in_forked_child() -> bool:
    return os.getpid() != _main_pid


def _flush_at_multiprocessing_exit(client: Zibrato) -> None:
    """multiprocessing children leave through os._exit (no atexit): close from its finalizers."""
    from multiprocessing import util
    util.Finalize(client, client.close, exitpriority=100)


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


def _close_all_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.close()
        except Exception:  # pragma: no cover - never fail interpreter exit
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
