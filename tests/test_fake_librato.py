"""The fake Librato Metrics API (tests/support/fake_librato.py) enforces the documented rules.

Every rejection test also posts the corrected payload and sees it accepted, so
each test fails both when a rule is not enforced and when it is enforced on
the wrong thing. Plain ``requests`` against a real local HTTP server.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from expecter import expect

from support.fake_librato import FakeLibrato

USER, TOKEN = "user@example.com", "secret-token"
AUTH = (USER, TOKEN)


@pytest.fixture
def librato():
    with FakeLibrato(user=USER, token=TOKEN) as fake:
        yield fake


def post(fake: FakeLibrato, payload, *, path: str = "/v1/metrics", auth=AUTH, timeout: float = 5, **kwargs):
    return requests.post(fake.url + path, json=payload, auth=auth, timeout=timeout, **kwargs)


def now() -> int:
    return int(time.time())


def gauge(name: str = "web.requests", value: float = 1.0, **fields) -> dict:
    return {"name": name, "value": value, **fields}


def gauges(n: int, prefix: str = "g") -> list[dict]:
    """``n`` gauges of distinct series (the same series and second would be stored once)."""
    return [gauge(f"{prefix}{i}") for i in range(n)]


def param_errors(response) -> dict:
    return response.json()["errors"]["params"]


def expect_rejected(fake: FakeLibrato, payload, field: str, status: int = 400, **kwargs) -> dict:
    """Post ``payload``: it must be rejected whole, naming ``field``; returns the errors."""
    before = len(fake.measurements())
    response = post(fake, payload, **kwargs)
    expect(response.status_code) == status
    errors = param_errors(response)
    expect(errors).contains(field)
    expect(len(fake.measurements())) == before
    return errors


def expect_accepted(fake: FakeLibrato, payload, count: int = 1, **kwargs) -> None:
    before = len(fake.measurements())
    response = post(fake, payload, **kwargs)
    expect(response.status_code) == 200
    expect(len(fake.measurements())) == before + count


# ----------------------------------------------------------------------------- accepted payloads


def test_a_good_payload_is_accepted_recorded_and_flattened(librato):
    t = now() - 10
    payload = {
        "source": "web-1",
        "measure_time": t,
        "gauges": [
            {"name": "db.latency", "count": 3, "sum": 12.5, "min": 1.5, "max": 7, "sum_squares": 66.25},
            {"name": "queue.depth", "value": 4, "source": "worker-2", "measure_time": t - 5},
        ],
        "counters": [{"name": "jobs.total", "value": 1200}],
    }
    response = post(librato, payload)

    expect(response.status_code) == 200
    expect(response.content) == b""
    expect(librato.measurements()) == [
        {
            "name": "db.latency",
            "count": 3,
            "sum": 12.5,
            "min": 1.5,
            "max": 7,
            "sum_squares": 66.25,
            "kind": "gauge",
            "source": "web-1",
            "measure_time": t,
        },
        {"name": "queue.depth", "value": 4, "source": "worker-2", "measure_time": t - 5, "kind": "gauge"},
        {"name": "jobs.total", "value": 1200, "kind": "counter", "source": "web-1", "measure_time": t},
    ]
    [request] = librato.requests()
    expect(request["method"]) == "POST"
    expect(request["path"]) == "/v1/metrics"
    expect(request["status"]) == 200
    expect(request["body"]) == payload
    expect(request["response"]) == None
    expect(request["headers"]["Content-Type"]) == "application/json"


def test_without_top_level_source_measurements_carry_only_their_own_fields(librato):
    expect_accepted(librato, {"gauges": [gauge("a", 1)]})
    expect(librato.measurements()) == [{"name": "a", "value": 1, "kind": "gauge"}]


def test_accessors_return_copies(librato):
    expect_accepted(librato, {"gauges": [gauge("a", 1)]})
    librato.measurements()[0]["value"] = 99
    librato.requests()[0]["body"]["gauges"] = []
    expect(librato.measurements()[0]["value"]) == 1
    expect(librato.requests()[0]["body"]["gauges"]) == [gauge("a", 1)]


# ----------------------------------------------------------------------------- request-level rules


def test_bad_or_missing_credentials_get_401_and_nothing_is_accepted(librato):
    for auth in [(USER, "wrong-token"), ("other@example.com", TOKEN), None]:
        response = post(librato, {"gauges": [gauge()]}, auth=auth)
        expect(response.status_code) == 401
        expect(response.json()) == {"errors": {"request": ["Authorization Required"]}}
        expect(response.headers["WWW-Authenticate"]).contains("Basic")
    expect(librato.measurements()) == []
    expect_accepted(librato, {"gauges": [gauge()]}, auth=AUTH)


def test_content_type_must_be_json(librato):
    body = json.dumps({"gauges": [gauge()]})
    for content_type in ["text/plain", "application/x-www-form-urlencoded"]:
        response = requests.post(
            librato.url + "/v1/metrics", data=body, auth=AUTH, timeout=5, headers={"Content-Type": content_type}
        )
        expect(response.status_code) == 415
        expect(response.json()["errors"]).contains("request")
    expect(librato.measurements()) == []
    response = requests.post(
        librato.url + "/v1/metrics",
        data=body,
        auth=AUTH,
        timeout=5,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    expect(response.status_code) == 200
    expect(len(librato.measurements())) == 1


def test_body_must_be_a_json_object(librato):
    for body in ["not json", "[1, 2]", '{"gauges": [{"name": "a", "value": NaN}]}']:
        response = requests.post(
            librato.url + "/v1/metrics", data=body, auth=AUTH, timeout=5, headers={"Content-Type": "application/json"}
        )
        expect(response.status_code) == 400
        expect(response.json()["errors"]).contains("request")
    expect(librato.measurements()) == []


def test_unknown_paths_are_404_and_other_methods_405(librato):
    expect(post(librato, {"gauges": [gauge()]}, path="/v1/metric").status_code) == 404
    expect(post(librato, {"gauges": [gauge()]}, path="//v1/metrics").status_code) == 404
    response = requests.get(librato.url + "/v1/metrics", auth=AUTH, timeout=5)
    expect(response.status_code) == 405
    expect(response.headers["Allow"]) == "POST"
    expect(librato.measurements()) == []
    expect([r["status"] for r in librato.requests()]) == [404, 404, 405]


# ----------------------------------------------------------------------------- payload rules


def test_at_least_one_measurement_is_required(librato):
    expect_rejected(librato, {}, "measurements")
    expect_rejected(librato, {"gauges": [], "counters": []}, "measurements")
    expect_rejected(librato, {"source": "web-1"}, "measurements")


def test_unknown_top_level_key_is_rejected(librato):
    expect_rejected(librato, {"gauges": [gauge()], "tags": {"a": "b"}}, "tags")
    expect_accepted(librato, {"gauges": [gauge()]})


def test_unknown_measurement_key_is_rejected(librato):
    errors = expect_rejected(librato, {"gauges": [gauge(type="gauge")]}, "type")
    expect(errors["type"][0]).contains("gauges[0]")
    expect_accepted(librato, {"gauges": [gauge(period=60, attributes={"aggregate": True})]})


def test_measurement_lists_must_be_arrays(librato):
    expect_rejected(librato, {"gauges": {"a": {"value": 1}}}, "gauges")


@pytest.mark.parametrize("bad", ["web requests", "web/requests", "caf\u00e9", "a\n", "", 7, None])
def test_name_must_use_the_allowed_characters(librato, bad):
    expect_rejected(librato, {"gauges": [gauge(bad)]}, "name")


def test_name_with_every_allowed_character_is_accepted(librato):
    expect_accepted(librato, {"gauges": [gauge("AZaz09.:-_")]})


def test_name_is_at_most_255_characters(librato):
    expect_rejected(librato, {"gauges": [gauge("n" * 256)]}, "name")
    expect_accepted(librato, {"gauges": [gauge("n" * 255)]})


def test_name_is_required(librato):
    expect_rejected(librato, {"gauges": [{"value": 1}]}, "name")


def test_source_follows_the_name_rules_in_measurements_and_at_top_level(librato):
    expect_rejected(librato, {"gauges": [gauge(source="web 1")]}, "source")
    expect_rejected(librato, {"source": "s" * 256, "gauges": [gauge()]}, "source")
    expect_rejected(librato, {"source": "all", "gauges": [gauge()]}, "source")  # reserved
    expect_accepted(librato, {"source": "s" * 255, "gauges": [gauge(source="web-1.example.com")]})


def test_summary_count_must_be_a_positive_integer(librato):
    expect_rejected(librato, {"gauges": [{"name": "t", "count": 0, "sum": 0}]}, "count")
    expect_rejected(librato, {"gauges": [{"name": "t", "count": 2.0, "sum": 3}]}, "count")
    expect_accepted(librato, {"gauges": [{"name": "t", "count": 1, "sum": 0}]})


def test_summary_requires_sum(librato):
    expect_rejected(librato, {"gauges": [{"name": "t", "count": 2, "min": 1, "max": 2}]}, "sum")


def test_value_and_count_together_are_rejected(librato):
    expect_rejected(librato, {"gauges": [{"name": "t", "value": 3, "count": 2, "sum": 3}]}, "value")
    expect_rejected(librato, {"gauges": [{"name": "t", "value": 3, "sum": 3}]}, "sum")


def test_a_measurement_needs_value_or_count(librato):
    expect_rejected(librato, {"gauges": [{"name": "t"}]}, "value")
    expect_rejected(librato, {"gauges": [{"name": "t", "sum": 3}]}, "value")


@pytest.mark.parametrize("bad", [True, "3", None, 1e200, [1]])
def test_value_must_be_a_finite_reasonable_number(librato, bad):
    expect_rejected(librato, {"gauges": [gauge(value=bad)]}, "value")


def test_counters_take_only_a_value(librato):
    expect_rejected(librato, {"counters": [{"name": "c", "count": 2, "sum": 3}]}, "count")
    expect_accepted(librato, {"counters": [{"name": "c", "value": 3}]})


def test_measure_time_must_be_integer_seconds(librato):
    t = now()
    expect_rejected(librato, {"gauges": [gauge(measure_time=t + 0.5)]}, "measure_time")
    expect_rejected(librato, {"gauges": [gauge(measure_time=str(t))]}, "measure_time")
    expect_rejected(librato, {"gauges": [gauge(measure_time=True)]}, "measure_time")
    expect_rejected(librato, {"gauges": [gauge(measure_time=t * 1000)]}, "measure_time")  # milliseconds
    expect_rejected(librato, {"measure_time": float(t), "gauges": [gauge()]}, "measure_time")
    expect_accepted(librato, {"measure_time": t, "gauges": [gauge(measure_time=t - 60)]})


def test_measure_time_window(librato):
    t = now()
    expect_rejected(librato, {"gauges": [gauge(measure_time=t + 16 * 60)]}, "measure_time")
    expect_rejected(librato, {"gauges": [gauge(measure_time=t - 366 * 24 * 3600)]}, "measure_time")
    expect_accepted(
        librato, {"gauges": [gauge(measure_time=t + 14 * 60), gauge(measure_time=t - 364 * 24 * 3600)]}, count=2
    )


def test_more_than_max_batch_measurements_are_rejected():
    with FakeLibrato(user=USER, token=TOKEN, max_batch=5) as fake:
        errors = expect_rejected(fake, {"gauges": gauges(3), "counters": gauges(3, "c")}, "measurements")
        expect(errors["measurements"][0]).contains("6 > 5")
        expect_accepted(fake, {"gauges": gauges(3), "counters": gauges(2, "c")}, count=5)


def test_default_max_batch_is_300(librato):
    expect_rejected(librato, {"gauges": gauges(301)}, "measurements")
    expect_accepted(librato, {"gauges": gauges(300)}, count=300)


def test_the_same_series_and_time_is_stored_once_the_last_value_winning(librato):
    t = now() - 10
    expect_accepted(
        librato, {"measure_time": t, "gauges": [gauge("a", 1), gauge("a", 2, source="web")]}, count=2
    )  # another source is another series
    response = post(librato, {"measure_time": t, "gauges": [gauge("a", 3), gauge("a", 4, measure_time=t - 1)]})
    expect(response.status_code) == 200
    response = post(librato, {"gauges": [gauge("b", 5), gauge("b", 6)]})  # no time: the arrival second
    expect(response.status_code) == 200
    kept = [(m["name"], m.get("source"), m.get("measure_time"), m["value"]) for m in librato.measurements()]
    expect(kept) == [("a", "web", t, 2), ("a", None, t, 3), ("a", None, t - 1, 4), ("b", None, None, 6)]
    expect(librato.overwrites()) == 2


def test_tagged_series_are_stored_once_per_tags_and_time():
    t = now()
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        payload = {
            "time": t,
            "tags": {"host": "a"},
            "measurements": [gauge("cpu", 1), gauge("cpu", 2, tags={"host": "b"}), gauge("cpu", 3)],
        }
        expect(post(fake, payload, path="/v1/measurements").status_code) == 202
        expect(sorted((m["tags"]["host"], m["value"]) for m in fake.measurements())) == [("a", 3), ("b", 2)]
        expect(fake.overwrites()) == 1


def test_one_bad_measurement_poisons_the_whole_batch(librato):
    payload = {"gauges": [gauge("ok.one"), gauge("bad name"), gauge("ok.two")], "counters": [gauge("ok.three")]}
    expect_rejected(librato, payload, "name")
    expect(librato.measurements()) == []


# ----------------------------------------------------------------------------- failure injection


def test_reject_name_poisons_the_whole_batch(librato):
    librato.reject_name("poison.me")
    errors = expect_rejected(librato, {"gauges": [gauge("fine.1"), gauge("poison.me"), gauge("fine.2")]}, "name")
    expect(errors["name"][0]).contains("poison.me")
    expect(librato.measurements()) == []
    expect_accepted(librato, {"gauges": [gauge("fine.1"), gauge("fine.2")]}, count=2)


def test_fail_next_answers_500_then_succeeds(librato):
    librato.fail_next(1)
    payload = {"gauges": [gauge("a", 1)]}
    first = post(librato, payload)
    expect(first.status_code) == 500
    expect(first.json()["errors"]).contains("request")
    expect(librato.measurements()) == []
    expect(post(librato, payload).status_code) == 200
    expect(librato.measurements()) == [{"name": "a", "value": 1, "kind": "gauge"}]


def test_fail_next_with_status_and_body(librato):
    librato.fail_next(2, status=429, body={"errors": {"request": ["rate limited"]}})
    for _ in range(2):
        response = post(librato, {"gauges": [gauge()]})
        expect(response.status_code) == 429
        expect(response.json()) == {"errors": {"request": ["rate limited"]}}
    expect(librato.measurements()) == []
    expect_accepted(librato, {"gauges": [gauge()]})


def test_fail_next_can_set_headers_and_requests_record_their_arrival(librato):
    librato.fail_next(1, status=503, headers={"Retry-After": "7"})
    first = post(librato, {"gauges": [gauge()]})
    expect((first.status_code, first.headers["Retry-After"])) == (503, "7")
    second = post(librato, {"gauges": [gauge()]})
    expect(second.status_code) == 200
    expect("Retry-After" in second.headers) == False
    arrivals = [r["received"] for r in librato.requests()]
    expect(arrivals[0]) <= arrivals[1]
    expect(arrivals[1]) <= time.monotonic()


def test_fail_until_cleared_is_an_outage_of_any_length(librato):
    librato.fail_until_cleared()
    for _ in range(5):
        expect(post(librato, {"gauges": [gauge()]}).status_code) == 503
    expect(librato.measurements()) == []
    librato.clear_failures()
    expect_accepted(librato, {"gauges": [gauge()]})


def test_delay_next_makes_the_client_time_out_and_accepts_nothing(librato):
    librato.delay_next(1, 0.5)
    with pytest.raises(requests.exceptions.Timeout):
        post(librato, {"gauges": [gauge("late", 1)]}, timeout=0.2)
    expect_accepted(librato, {"gauges": [gauge("retried", 2)]})
    # the delayed request finishes with 504 and still accepts nothing
    expect(librato.wait_for(lambda: 504 in [r["status"] for r in librato.requests()], timeout=3)) == True
    expect(librato.measurements()) == [{"name": "retried", "value": 2, "kind": "gauge"}]


def test_stop_cuts_kept_alive_connections_and_start_reuses_the_url():
    fake = FakeLibrato(user=USER, token=TOKEN).start()
    try:
        url = fake.url
        with requests.Session() as session:
            ok = session.post(url + "/v1/metrics", json={"gauges": [gauge("before")]}, auth=AUTH, timeout=5)
            expect(ok.status_code) == 200
            fake.stop()
            with pytest.raises(requests.exceptions.ConnectionError):
                session.post(url + "/v1/metrics", json={"gauges": [gauge()]}, auth=AUTH, timeout=5)
        fake.start()
        expect(fake.url) == url
        expect_accepted(fake, {"gauges": [gauge("after")]})
        expect(len(fake.measurements())) == 2
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- wait_for


def test_wait_for_returns_true_when_a_post_from_another_thread_lands(librato):
    sender = threading.Timer(0.1, post, args=(librato, {"gauges": [gauge("async", 1)]}))
    sender.start()
    try:
        expect(librato.wait_for(lambda: len(librato.measurements()) == 1, timeout=5)) == True
    finally:
        sender.join()


def test_wait_for_sees_state_changed_by_another_thread_without_requests(librato):
    flag = threading.Event()
    setter = threading.Timer(0.1, flag.set)
    setter.start()
    started = time.monotonic()
    expect(librato.wait_for(flag.is_set, timeout=5)) == True
    expect(time.monotonic() - started) < 1
    setter.join()


def test_wait_for_returns_false_after_the_timeout(librato):
    started = time.monotonic()
    expect(librato.wait_for(lambda: False, timeout=0.2)) == False
    elapsed = time.monotonic() - started
    expect(elapsed) >= 0.2
    expect(elapsed) < 1


# ----------------------------------------------------------------------------- tagged API


def test_tagged_api_is_forbidden_unless_enabled(librato):
    response = post(librato, {"tags": {"host": "a"}, "measurements": [gauge()]}, path="/v1/measurements")
    expect(response.status_code) == 403
    expect(librato.measurements()) == []


def test_tagged_api_merges_and_lower_cases_tags():
    t = now()
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        payload = {
            "time": t,
            "tags": {"Region": "US-West", "host": "web-1"},
            "measurements": [
                {"name": "cpu", "value": 4.5, "tags": {"host": "Web-2"}},
                {"name": "lat", "count": 2, "sum": 3.0, "min": 1, "max": 2, "time": t - 60, "tags": {"host": None}},
            ],
        }
        response = post(fake, payload, path="/v1/measurements")
        expect(response.status_code) == 202
        expect(fake.measurements()) == [
            {"name": "cpu", "value": 4.5, "tags": {"region": "us-west", "host": "web-2"}, "kind": "tagged", "time": t},
            {
                "name": "lat",
                "count": 2,
                "sum": 3.0,
                "min": 1,
                "max": 2,
                "time": t - 60,
                "tags": {"region": "us-west"},
                "kind": "tagged",
            },
        ]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"tags": {"bad/name": "x"}, "measurements": [gauge()]}, "tags"),
        ({"tags": {"host": "x" * 256}, "measurements": [gauge()]}, "tags"),
        ({"measurements": [gauge()]}, "tags"),  # no tag at all
        ({"tags": {"host": "a"}, "measurements": []}, "measurements"),
        ({"tags": {"host": "a"}, "measurements": [gauge(source="x")]}, "source"),
        ({"tags": {"host": "a"}, "measurements": [gauge("bad name")]}, "name"),
        ({"tags": {"host": "a"}, "time": 1.5, "measurements": [gauge()]}, "time"),
    ],
)
def test_tagged_api_rules(payload, field):
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        expect_rejected(fake, payload, field, path="/v1/measurements")
        response = post(fake, {"tags": {"host": "a b"}, "measurements": [gauge()]}, path="/v1/measurements")
        expect(response.status_code) == 202
