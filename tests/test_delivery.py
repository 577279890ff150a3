"""The delivery queue in-process: a real delivery thread against tiny destinations.

Backoffs are scaled down (milliseconds) so that nothing here waits for real
seconds; what is asserted is counts and order, never durations.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from expecter import expect

from support.daemons import wait_until
from zibrato.delivery import Backoff, DeliveryQueue, NameFitter, Rejected, Retryable, parse_retry_after, request_timeout
from zibrato.destination import CUT_OFF, REFUSED, Destination, Interval, Part
from zibrato.runtime import printable

MINUTE = 60.0


def interval(minute: int, series: int = 0) -> Interval:
    return Interval(minute * MINUTE - MINUTE, minute * MINUTE, [{"name": f"s{i}"} for i in range(series)])


class Blocked(Destination):
    """Each post waits for :attr:`release`; records what started and what was delivered."""

    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[float] = []
        self.delivered: list[float] = []

    def post(self, interval: Interval) -> None:
        self.started.append(interval.end)
        if not self.release.wait(10):
            raise TimeoutError("the test never released the post")
        self.delivered.append(interval.end)


class Failing(Destination):
    """Fails every post with ``error``; records when each attempt was made."""

    name = "failing"

    def __init__(self, error: Exception, succeed_after: int | None = None) -> None:
        self.error, self.succeed_after = error, succeed_after
        self.attempts: list[float] = []
        self.delivered: list[float] = []

    def post(self, interval: Interval) -> None:
        self.attempts.append(time.monotonic())
        if self.succeed_after is None or len(self.attempts) <= self.succeed_after:
            raise self.error
        self.delivered.append(interval.end)


def finish(queue: DeliveryQueue, thread: threading.Thread, budget: float = 5.0) -> None:
    queue.stop(time.monotonic() + budget)
    thread.join(budget + 1)
    expect(thread.is_alive()) == False


def test_an_overflow_drops_the_oldest_waiting_interval_never_the_one_in_flight(caplog):
    destination = Blocked()
    queue = DeliveryQueue(destination, max_backlog=3)
    thread = queue.start()
    queue.put(interval(1, series=2))
    wait_until(lambda: destination.started == [MINUTE], message="the first post in flight")
    for minute in range(2, 7):
        queue.put(interval(minute, series=2))
        expect(queue.backlog) <= 3  # the one in flight counts
    expect(queue.in_flight.end) == MINUTE
    expect([i.end for i in queue.waiting()]) == [5 * MINUTE, 6 * MINUTE]

    destination.release.set()
    finish(queue, thread)
    expect(destination.delivered) == [1 * MINUTE, 5 * MINUTE, 6 * MINUTE]
    expect(queue.counts["dropped_intervals"]) == 3
    expect(queue.counts["dropped_series"]) == 6
    dropped = [r for r in caplog.records if "delivery backlog full" in r.getMessage()]
    expect([r.getMessage().split("interval at ")[1][:20] for r in dropped]) == [
        "1970-01-01T00:02:00Z",
        "1970-01-01T00:03:00Z",
        "1970-01-01T00:04:00Z",
    ]
    expect({r.levelno for r in dropped}) == {logging.ERROR}


def test_without_delivery_running_the_oldest_interval_is_dropped():
    queue = DeliveryQueue(Blocked(), max_backlog=3)
    for minute in range(1, 6):
        queue.put(interval(minute))
    expect([i.end for i in queue.waiting()]) == [3 * MINUTE, 4 * MINUTE, 5 * MINUTE]
    expect(queue.counts["dropped_intervals"]) == 2


def test_a_transient_failure_is_retried_until_delivered_and_health_recovers(caplog):
    caplog.set_level(logging.INFO)
    destination = Failing(Retryable("503 from the service"), succeed_after=3)
    queue = DeliveryQueue(destination, backoff=Backoff(0.001, 0.004))
    thread = queue.start()
    queue.put(interval(1))
    wait_until(lambda: queue.counts["delivered_intervals"], message="delivery after three failures")
    expect(queue.counts["failed_attempts"]) == 3
    expect(queue.counts["retries"]) == 3
    expect(queue.problems()) == []
    expect(queue.failing_for()) == None
    expect(caplog.text).contains("recovered after 3 failed attempts")
    finish(queue, thread)


def test_while_failing_status_says_for_how_long_and_why():
    clock = [1000.0]
    queue = DeliveryQueue(Failing(ConnectionRefusedError()), clock=lambda: clock[0])
    queue.failing_since, queue.last_error = 990.0, "connection refused"
    expect(queue.problems()) == ["failing delivery failing for 10 s (connection refused)"]
    expect(queue.figures()["failing_seconds"]) == 10.0


@pytest.mark.parametrize(
    "failure",
    [Rejected("400: bad measurement"), KeyError("value")],  # refused by the service; a bug in a mapping
    ids=["rejected", "mapping-bug"],
)
def test_an_interval_that_cannot_be_delivered_is_dropped_counted_and_the_next_delivered(caplog, failure):
    class FailFirst(Blocked):
        def post(self, interval):
            if interval.end == MINUTE:
                raise failure
            self.delivered.append(interval.end)

    destination = FailFirst()
    queue = DeliveryQueue(destination)
    thread = queue.start()
    queue.put(interval(1))
    queue.put(interval(2))
    finish(queue, thread)
    expect(destination.delivered) == [2 * MINUTE]
    expect(queue.counts["rejected_intervals"]) == 1
    if isinstance(failure, Rejected):
        expect(caplog.text).contains("400: bad measurement")


def test_a_stop_during_an_outage_makes_at_most_one_attempt_per_backoff_step_and_ends_in_budget():
    destination = Failing(ConnectionRefusedError())
    queue = DeliveryQueue(destination, backoff=Backoff(0.05, 10.0))
    thread = queue.start()
    queue.put(interval(1, series=3))
    queue.put(interval(2, series=4))
    wait_until(lambda: len(destination.attempts) >= 4, message="a few failed attempts")
    stopped = time.monotonic()
    failures = len(destination.attempts)
    budget = 1.0
    queue.stop(stopped + budget)
    thread.join(budget + 1)
    ended = time.monotonic()

    expect(thread.is_alive()) == False
    expect(ended - stopped) < budget
    after_stop = [t for t in destination.attempts if t >= stopped]
    # each backoff step waits at least half its delay: at most that many steps fit, plus one final
    steps, waited = 0, 0.0
    while waited + 0.05 * 2 ** (failures + steps - 1) / 2 <= budget:
        waited += 0.05 * 2 ** (failures + steps - 1) / 2
        steps += 1
    expect(len(after_stop)) <= steps + 1
    gaps = [b - a for a, b in zip(destination.attempts, destination.attempts[1:])]
    expect(min(gaps)) > 0.02  # never a busy loop
    expect(queue.counts["cut_off_intervals"]) == 2
    expect(queue.counts["cut_off_series"]) == 7


def test_a_retry_after_past_the_deadline_is_honoured_no_attempt_after_the_stop():
    destination = Failing(Retryable("429", retry_after=120))
    queue = DeliveryQueue(destination, backoff=Backoff(0.01, 0.02))
    thread = queue.start()
    queue.put(interval(1, series=1))
    wait_until(lambda: len(destination.attempts) == 1, message="the 429")
    time.sleep(0.01)
    finish(queue, thread, budget=2.0)
    expect(len(destination.attempts)) == 1
    expect(queue.counts["cut_off_intervals"]) == 1


def test_request_timeouts_never_run_past_the_stop_deadline():
    seen = []

    class Slow(Blocked):
        def post(self, interval):
            seen.append(request_timeout(30.0))
            raise Retryable("slow")

    queue = DeliveryQueue(Slow(), backoff=Backoff(0.01, 0.02))
    queue.stop(time.monotonic() + 0.5)
    queue.put(interval(1))
    queue.run()
    expect(seen[0]) <= 0.5
    expect(request_timeout(30.0)) == 30.0  # outside a delivery thread


def test_abandoning_a_post_that_outlives_the_window_counts_it_once():
    destination = Blocked()
    queue = DeliveryQueue(destination)
    thread = queue.start()
    queue.put(interval(1, series=2))
    queue.put(interval(2, series=5))
    wait_until(lambda: destination.started, message="the post in flight")
    queue.stop(time.monotonic())
    queue.abandon()
    queue.abandon()
    expect(queue.counts["cut_off_intervals"]) == 2
    expect(queue.counts["cut_off_series"]) == 7
    destination.release.set()
    thread.join(5)


def test_a_post_that_never_returns_makes_delivery_stalled_after_the_given_time():
    destination = Blocked()
    now = [1000.0]
    queue = DeliveryQueue(destination, clock=lambda: now[0], stalled_after=15.0)
    thread = queue.start()
    queue.put(interval(1))
    wait_until(lambda: destination.started, message="the post in flight")
    now[0] += 10
    expect(queue.problems()) == []
    expect(queue.figures()["in_flight_seconds"]) == 10
    now[0] += 6
    [problem] = queue.problems()
    expect(problem).contains("blocked delivery stalled: nothing delivered for 16 s while trying")
    destination.release.set()
    wait_until(lambda: queue.counts["delivered_intervals"] == 1, message="the post returned")
    expect((queue.problems(), queue.figures()["in_flight_seconds"])) == ([], None)
    finish(queue, thread)


# --- parts: a destination that sends an interval as several requests ----------------


class Batches(Destination):
    """Splits an interval into parts of ``size`` series; ``answers`` says how each send ends, in order.

    An answer is None (accepted), an exception (raised), or a list of payloads
    (this part done, those sent in its place). Records every send and what it was told was lost.
    """

    name = "batches"

    def __init__(self, size: int = 2, answers: list | None = None) -> None:
        self.size, self.answers = size, list(answers or [])
        self.sent: list[tuple] = []  # the payload of every send, in order, failed ones included
        self.accepted: list[tuple] = []
        self.lost_parts: list[tuple[tuple, str]] = []

    def parts(self, interval: Interval) -> list[Part]:
        names = tuple(s["name"] for s in interval.summaries)
        return [Part(names[i : i + self.size], len(names[i : i + self.size])) for i in range(0, len(names), self.size)]

    def send(self, part: Part) -> list[Part] | None:
        self.sent.append(part.payload)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, list):
            return [Part(payload, len(payload)) for payload in answer]
        self.accepted.append(part.payload)
        return None

    def lost(self, parts, reason):
        self.lost_parts.extend((part.payload, reason) for part in parts)


def names(*series: str) -> tuple:
    """A part's payload: the names of its series."""
    return series


def test_a_failure_in_a_later_part_retries_only_that_part_and_the_rest():
    destination = Batches(answers=[None, Retryable("503"), Retryable("503"), None, None])
    queue = DeliveryQueue(destination, backoff=Backoff(0.001, 0.002))
    thread = queue.start()
    queue.put(interval(1, series=5))
    wait_until(lambda: queue.counts["delivered_intervals"] == 1, message="the interval delivered")
    finish(queue, thread)
    first, second, third = names("s0", "s1"), names("s2", "s3"), names("s4")
    expect(destination.sent) == [first, second, second, second, third]  # the first part never again
    expect(destination.accepted) == [first, second, third]
    c = queue.counts
    expect((c["parts_delivered"], c["parts_retried"], c["failed_attempts"], c["retries"])) == (3, 1, 2, 2)


def test_a_refused_part_costs_only_itself_and_the_interval_counts_as_rejected(caplog):
    destination = Batches(answers=[None, Rejected("400: bad batch"), None])
    queue = DeliveryQueue(destination)
    thread = queue.start()
    queue.put(interval(1, series=5))
    queue.put(interval(2, series=1))
    finish(queue, thread)
    expect(destination.accepted) == [names("s0", "s1"), names("s4"), names("s0")]
    c = queue.counts
    expect((c["parts_rejected"], c["rejected_points"], c["rejected_intervals"], c["delivered_intervals"])) == (
        1,
        2,
        1,
        1,
    )
    expect(caplog.text).contains("400: bad batch")


def test_a_refusal_of_the_whole_interval_drops_the_parts_not_yet_sent_and_says_so():
    destination = Batches(answers=[None, Rejected("404: no such database", whole_interval=True)])
    queue = DeliveryQueue(destination)
    thread = queue.start()
    queue.put(interval(1, series=5))
    finish(queue, thread)
    expect(destination.sent) == [names("s0", "s1"), names("s2", "s3")]  # the third is never sent
    expect(destination.lost_parts) == [(names("s4"), REFUSED)]
    c = queue.counts
    expect((c["parts_rejected"], c["rejected_points"], c["rejected_intervals"])) == (2, 3, 1)


def test_parts_a_send_returns_are_sent_next_in_its_place():
    destination = Batches(size=4, answers=[[("s0", "s1"), ("s2", "s3")], None, None, None])
    queue = DeliveryQueue(destination)
    thread = queue.start()
    queue.put(interval(1, series=5))
    finish(queue, thread)
    expect(destination.sent) == [names("s0", "s1", "s2", "s3"), names("s0", "s1"), names("s2", "s3"), names("s4")]
    expect((queue.counts["parts_delivered"], queue.counts["delivered_intervals"])) == (3, 1)


def test_a_stop_during_an_outage_counts_the_parts_not_accepted_and_tells_the_destination():
    destination = Batches(answers=[None] + [ConnectionRefusedError()] * 100)
    queue = DeliveryQueue(destination, backoff=Backoff(0.05, 10.0))
    thread = queue.start()
    queue.put(interval(1, series=5))
    queue.put(interval(2, series=3))
    wait_until(lambda: queue.counts["failed_attempts"] >= 2, message="failing after the first part")
    finish(queue, thread, budget=0.5)
    c = queue.counts
    expect((c["cut_off_intervals"], c["cut_off_series"])) == (2, 8)
    expect((c["cut_off_parts"], c["cut_off_points"])) == (2, 3)  # the interval in flight: its last two parts
    expect((c["parts_delivered"], c["delivered_intervals"])) == (1, 0)
    expect(destination.lost_parts) == [(names("s2", "s3"), CUT_OFF), (names("s4"), CUT_OFF)]


def test_a_destination_without_parts_is_one_part_sent_by_post():
    destination = Failing(Retryable("503"), succeed_after=1)
    queue = DeliveryQueue(destination, backoff=Backoff(0.001, 0.002))
    thread = queue.start()
    queue.put(interval(1, series=4))
    wait_until(lambda: queue.counts["delivered_intervals"] == 1, message="delivered")
    finish(queue, thread)
    expect(destination.delivered) == [MINUTE]
    c = queue.counts
    expect((c["parts_delivered"], c["parts_retried"], c["failed_attempts"])) == (1, 1, 1)


def test_post_on_a_destination_with_parts_sends_each_once_and_reports_refusals_at_the_end():
    destination = Batches(answers=[Rejected("400: first"), None, None])
    with pytest.raises(Rejected, match="400: first"):
        destination.post(interval(1, series=5))
    expect(destination.accepted) == [names("s2", "s3"), names("s4")]
    with pytest.raises(NotImplementedError):
        Destination().post(interval(1))


@pytest.mark.parametrize(
    "header, seconds",
    [
        ("120", 120.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("soon", None),
        ("nan", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header, seconds):
    now = 1445412450.0  # 30 s before the date above
    expect(parse_retry_after(header, now=now)) == seconds


def test_backoff_doubles_with_jitter_up_to_its_cap_and_honours_retry_after():
    backoff = Backoff(1.0, 8.0)
    for failures, high in ((1, 1), (2, 2), (3, 4), (4, 8), (10, 8)):
        delay = backoff.delay(failures)
        expect(high / 2 <= delay <= high) == True
    expect(backoff.delay(1, retry_after=200)) == 200
    expect(backoff.delay(1, retry_after=10_000)) == 300


def test_the_name_fitter_caches_and_logs_each_change_once(caplog):
    import re

    fit = NameFitter(logging.getLogger("t"), "A-Z only", re.compile(r"[^A-Za-z]"), destination="X")
    expect([fit("AB"), fit("A b"), fit("A b"), fit("A\nb", 2)]) == ["AB", "A_b", "A_b", "A_"]
    expect(fit.changed) == 2
    expect(caplog.text.count("A b")) == 1
    expect(caplog.text).contains("'A\\nb'")


def test_printable_escapes_control_characters_and_truncates():
    expect(printable("a\nb")) == "a\\nb"
    expect(printable("x" * 300, limit=10)) == "xxxxxxxxxx...(+290 characters)"
    expect("\n" in printable("é\r\n" * 100)) == False
