"""Instruments: the decorators and context managers that turn code into measurements.

One class per kind (:class:`Timer`, :class:`Counter`) is at once a decorator
(of functions, methods, ``async def`` functions, generators and async
generators) and a context manager. Each validates its series once, when it
is made; a call then costs one clock read or none, one tuple and one
C-level append to the client's bounded buffer (see :mod:`zibrato.sender`).

A decorated call keeps its start in a local variable, and each ``with`` on
an instrument keeps its start in a per-thread, per-task stack
(:mod:`contextvars`): an instrument may be shared by threads and tasks, and
its blocks may nest.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from .protocol import COUNTER, TIMER
from .series_rules import Series, Tags, add_tags, check_rate, number

if TYPE_CHECKING:
    from .buffer import Lane, SharedLane

__all__ = ["Timer", "Counter"]

F = TypeVar("F", bound=Callable[..., Any])
InstrumentT = TypeVar("InstrumentT", bound="_Instrument")
_perf_counter = time.perf_counter


class _Client(Protocol):
    """What an instrument uses of its :class:`zibrato.client.Zibrato` (no import of it: the client imports this).

    ``_record`` is looked up at each call (a client's recording path changes:
    sender starting, closed, diverted by ``capture``); the rest once, when the
    instrument is made.
    """

    _record: Callable[[tuple[Series, Any]], None]
    _random: Callable[[], float]

    def _cached_series(
        self, level: str, type: str, name: str, source: str | None, tags: Tags, rate: float = 1.0
    ) -> Series: ...

    def _lane(self, series: Series) -> Lane | SharedLane: ...


#: the token of a call that sampling left out: nothing is recorded for it
_SKIPPED = object()
#: the ``with`` blocks open on shared instruments, in this thread or task: ((instrument, token), ...)
_open_blocks: ContextVar[tuple[tuple[_Instrument, object], ...]] = ContextVar("zibrato_open_blocks", default=())


def is_async(func: Callable[..., Any]) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (a handler class)."""
    return inspect.iscoroutinefunction(func) or (
        not inspect.isroutine(func) and inspect.iscoroutinefunction(getattr(type(func), "__call__", None))
    )


class _Instrument:
    """What Timer and Counter share: a validated series, sampling, outcome tagging, wrappers.

    A subclass says what one measurement is with :meth:`_begin` (taken before
    the code runs) and :meth:`_value` (after); synchronous functions get a
    hand-inlined fast path per subclass, the rarer kinds share the wrappers here.
    """

    def __init__(
        self,
        client: _Client,
        level: str,
        type_: str,
        name: str,
        source: str | None,
        tags: Tags,
        outcome: bool,
        rate: float = 1.0,
    ) -> None:
        self.client = client
        self.outcome = outcome
        self.rate = check_rate(rate)
        self._plain = client._cached_series(level, type_, name, source, tags, self.rate)
        self.series = add_tags(self._plain, "outcome:ok") if outcome else self._plain
        #: the client's random source (Zibrato(random=...)), drawn once per sampled call
        self._draw = client._random
        self._error_series: dict[type[BaseException], Series] = {}
        #: what a call does first: _begin, or a draw that may leave the call out
        self._start = self._begin if self.rate == 1.0 else self._sampled_begin

    def _begin(self) -> object:
        return None

    def _value(self, token: Any) -> float:
        raise NotImplementedError

    def _sampled_begin(self) -> object:
        """:meth:`_begin`, or the token that says sampling left this call out."""
        if self._draw() >= self.rate:
            return _SKIPPED
        return self._begin()

    def _series_for(self, error: BaseException | None) -> Series:
        """The series a call lands in: tagged outcome:error and the class when it raised."""
        if error is None or not self.outcome or isinstance(error, GeneratorExit):
            return self.series  # GeneratorExit: the caller stopped iterating early, not a failure
        kind = type(error)
        series = self._error_series.get(kind)
        if series is None:
            series = add_tags(self._plain, "outcome:error", f"error:{kind.__name__}")
            self._error_series[kind] = series
        return series

    def _finish(self, token: object, error: BaseException | None) -> None:
        if token is not _SKIPPED:
            self.client._record((self._series_for(error), self._value(token)))

    def __call__(self, func: F) -> F:
        if is_async(func):
            wrapper = self._wrap_coroutine(func)
        elif inspect.isasyncgenfunction(func):
            wrapper = self._wrap_async_generator(func)
        elif inspect.isgeneratorfunction(func):
            wrapper = self._wrap_generator(func)
        elif self.outcome or self.rate < 1.0:
            wrapper = self._wrap_function(func)
        else:
            wrapper = self._wrap_plain_function(func)
        return functools.wraps(func)(wrapper)  # type: ignore[return-value]

    def _wrap_plain_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return self._wrap_function(func)

    def _wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            token, error = self._start(), None
            try:
                return func(*args, **kwargs)
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)

        return measured

    def _wrap_coroutine(self, func: Callable[..., Any]) -> Callable[..., Any]:
        async def measured_coroutine(*args: Any, **kwargs: Any) -> Any:
            token, error = self._start(), None
            try:
                return await func(*args, **kwargs)
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)

        return measured_coroutine

    def _wrap_generator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def measured_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            token, error = self._start(), None
            try:
                return (yield from func(*args, **kwargs))
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, error)

        return measured_generator

    def _wrap_async_generator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Measures the whole iteration; values sent with asend() are passed through."""

        async def measured_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            token, error = self._start(), None
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

    # An instrument used directly as a context manager (``t = z.time_me(...)``, then
    # ``with t:``) may be shared: each block's token lives in this thread's or task's stack.

    def __enter__(self: InstrumentT) -> InstrumentT:
        _open_blocks.set(_open_blocks.get() + ((self, self._start()),))
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        blocks = _open_blocks.get()
        for index in range(len(blocks) - 1, -1, -1):  # the innermost open block of this instrument
            if blocks[index][0] is self:
                token = blocks[index][1]
                _open_blocks.set(blocks[:index] + blocks[index + 1 :])
                self._finish(token, error)
                break
        return False

    async def __aenter__(self: InstrumentT) -> InstrumentT:
        return self.__enter__()

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        return self.__exit__(kind, error, tb)


class Timer(_Instrument):
    """Decorator and context manager that records elapsed seconds, also when the code raises.

    The decorator keeps its start time in a local variable, so one decorated
    function can run in many threads at once; ``with`` blocks on one Timer
    each get their own start too (nested, in threads, in tasks).
    """

    def __init__(
        self, client: _Client, level: str, name: str, source: str | None, tags: Tags, outcome: bool, rate: float = 1.0
    ) -> None:
        super().__init__(client, level, TIMER, name, source, tags, outcome, rate)
        #: the lane of a plain timer's series (its decorated calls and ``with`` blocks append there)
        self.lane: Lane | SharedLane | None = None if outcome or self.rate < 1.0 else client._lane(self.series)

    def _begin(self) -> float:
        return _perf_counter()

    def _value(self, start: float) -> float:
        return _perf_counter() - start

    def _wrap_plain_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        lane = self.lane or self.client._lane(self.series)

        def timed(*args: Any, **kwargs: Any) -> Any:  # the hot path, inlined: one append to its lane
            start = _perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                lane.record((_perf_counter() - start,))

        return timed


class Counter(_Instrument):
    """Decorator and context manager that adds ``value`` per call or block, also when it raises."""

    def __init__(
        self,
        client: _Client,
        level: str,
        name: str,
        value: float,
        source: str | None,
        tags: Tags,
        outcome: bool,
        rate: float = 1.0,
    ) -> None:
        self.value: float = number(value)
        super().__init__(client, level, COUNTER, name, source, tags, outcome, rate)

    def _value(self, token: object) -> float:
        return self.value

    def _wrap_plain_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        lane, value = self.client._lane(self.series), self.value

        def counted(*args: Any, **kwargs: Any) -> Any:  # the hot path, inlined: one append to its lane
            try:
                return func(*args, **kwargs)
            finally:
                lane.record((value,))  # a new tuple each call: the collector counts it (zibrato.buffer)

        return counted


class Block:
    """One ``with z.Time_me(...)`` / ``with z.Count_me(...)`` block: its own start, a shared instrument.

    Each block is a fresh object, so blocks may nest and run in many threads at once.
    """

    __slots__ = ("instrument", "token")

    def __init__(self, instrument: _Instrument) -> None:
        self.instrument = instrument

    def __enter__(self) -> Block:
        self.token = self.instrument._start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        self.instrument._finish(self.token, error)
        return False

    async def __aenter__(self) -> Block:
        return self.__enter__()

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        return self.__exit__(kind, error, tb)

    def __call__(self, func: F) -> F:
        """``@z.Time_me(...)`` works as a decorator too."""
        return self.instrument(func)


class TimerBlock:
    """``with z.Time_me(...)`` for a plain timer (no outcome tags, no sampling), inlined.

    The common block, so it skips :class:`Block`'s four calls into the
    instrument: it reads the clock and records itself (about 0.3 us less).
    """

    __slots__ = ("lane", "start", "timer")

    def __init__(self, timer: Timer) -> None:
        self.timer = timer
        self.lane: Lane | SharedLane = timer.lane  # type: ignore[assignment]  # a plain timer's: never None

    def __enter__(self) -> TimerBlock:
        self.start = _perf_counter()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        self.lane.record((_perf_counter() - self.start,))
        return False

    async def __aenter__(self) -> TimerBlock:
        return self.__enter__()

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> Literal[False]:
        return self.__exit__(kind, error, tb)

    def __call__(self, func: F) -> F:
        """``@z.Time_me(...)`` works as a decorator too."""
        return self.timer(func)
