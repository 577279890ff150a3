"""Several workers for one level: disjoint shares that together deliver exactly what one worker does."""

from __future__ import annotations

import signal

import pytest

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato
from zibrato.runtime import ask_status

pytestmark = pytest.mark.timeout(60)


def test_shard_workers_together_deliver_exactly_what_one_worker_does(tmp_path):
    base = free_ports(6)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0.1").start()
    common = ("--port", base + 1, "--flush", 86400, "--format", "json", "--no-self-metrics", "--levels", "info")
    ports = {"one": base + 3, "0/2": base + 4, "1/2": base + 5}
    workers = {}  # each started as it is made: a Daemon names its log files when made
    for key, port in ports.items():
        shard = () if key == "one" else ("--shard", key)
        workers[key] = Daemon(tmp_path, "zibrato-console", *common, *shard, "--status-port", port).start()
    sharding, plain = Zibrato(port=base, shards=True), Zibrato(port=base)
    try:
        broker.wait_for_log("broker ready")
        for worker in workers.values():
            worker.wait_for_log("console worker")

        def all_subscribed() -> bool:
            for i in range(16):
                sharding.count("info", f"warmup.{i}")
                plain.count("info", f"warmup.{i}")
            sharding.flush()
            plain.flush()
            return all(ask_status("127.0.0.1", p)["measurements"] > 0 for p in ports.values())

        wait_until(all_subscribed, timeout=15, interval=0.2, message="every worker subscribed")

        def measured(*keys: str) -> float:
            return sum(ask_status("127.0.0.1", ports[k])["measurements"] for k in keys)

        before_one, before_shards = measured("one"), measured("0/2", "1/2")
        for i in range(300):
            sharding.count("info", f"sharded.{i}", i)
            sharding.timing("info", "db.query", i / 1000, tags={"table": f"t{i % 7}"})
            plain.count("info", f"old_client.{i % 50}", 2)  # a client that does not shard
        sharding.count("info", "information", 5)  # another level's prefix must not leak in
        sharding.count("information", "other.level", 1)
        sharding.flush()
        plain.flush()
        wait_until(lambda: measured("one") >= before_one + 901, timeout=15, message="all at the one worker")
        wait_until(
            lambda: measured("0/2", "1/2") >= before_shards + 901,
            timeout=15,
            message="all at the shard workers, between them",
        )
        for worker in workers.values():
            worker.signal(signal.SIGTERM)
            assert worker.wait(15) == 0, worker.stderr

        def series(worker: Daemon) -> dict:
            return {
                (s["type"], s["name"], tuple(s["tags"])): s
                for s in worker.json_lines()
                if not s["name"].startswith("warmup.")
            }

        one, first, second = (series(workers[k]) for k in ("one", "0/2", "1/2"))
        assert first and second and not first.keys() & second.keys()  # disjoint
        assert first.keys() | second.keys() == one.keys()  # together, everything
        for key, summary in {**first, **second}.items():
            for field in ("value", "count", "sum", "p50", "p99"):
                assert summary.get(field) == one[key].get(field), (key, field)
        assert ("counter", "other.level", ()) not in one
        assert sum(1 for k in one if k[1].startswith("old_client.")) == 50
    finally:
        sharding.close(timeout=1)
        plain.close(timeout=1)
        for worker in workers.values():
            worker.stop()
        broker.stop()


def test_one_worker_subscribes_to_several_brokers(tmp_path):
    first, second = free_ports(3), free_ports(3)
    brokers = []
    for base in (first, second):
        brokers.append(Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0.1").start())
        brokers[-1].wait_for_log("broker ready")
    status_port = free_ports(1)
    worker = Daemon(
        tmp_path,
        "zibrato-console",
        "--host",
        f"127.0.0.1:{first + 1}",
        "--host",
        f"localhost:{second + 1}",
        "--flush",
        0.5,
        "--format",
        "json",
        "--no-self-metrics",
        "--status-port",
        status_port,
    ).start()
    clients = [Zibrato(port=first), Zibrato(port=second)]
    try:
        worker.wait_for_log("console worker")
        assert f"127.0.0.1:{first + 1},tcp://localhost:{second + 1}" in worker.stderr

        def both_subscribed() -> bool:
            for i, client in enumerate(clients):
                client.count("info", f"warmup.{i}")
                client.flush()
            return {"warmup.0", "warmup.1"} <= {s["name"] for s in worker.json_lines()}

        wait_until(both_subscribed, timeout=15, interval=0.2, message="the worker subscribed to both")
        for client in clients:
            client.count("info", "orders", 5)
            client.flush()
        wait_until(
            lambda: sum(s["value"] for s in worker.json_lines() if s["name"] == "orders") >= 10,
            timeout=10,
            message="both brokers' orders",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert sum(s["value"] for s in worker.json_lines() if s["name"] == "orders") == 10
    finally:
        for client in clients:
            client.close(timeout=1)
        worker.stop()
        for broker in brokers:
            broker.stop()
