"""zibrato demo: broker + console worker + a small workload, in one terminal."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import click

from .. import Zibrato
from ..runtime import STOP_SIGNALS, install_stop_handlers
from .common import CONTEXT_SETTINGS, MAX_FLUSH, MIN_FLUSH, Seconds


@click.command("demo", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--port",
    default=5550,
    show_default=True,
    type=click.IntRange(1, 65533),
    help="Broker port (PUB on PORT + 1, status on PORT + 2).",
)
@click.option(
    "--flush",
    default=2.0,
    show_default=True,
    type=Seconds(MIN_FLUSH, MAX_FLUSH),
    help="Console flush interval in seconds.",
)
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--duration",
    type=Seconds(0, 7 * 86_400),
    default=None,
    help="Stop after this many seconds [default: until Ctrl-C].",
)
@click.option("--web", is_flag=True, help="Also start zibrato-web and print the URL of its live page.")
@click.option(
    "--web-listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT of the web view (with --web)."
)
def command(port: int, flush: float, format_: str, duration: float | None, web: bool, web_listen: str) -> None:
    """Start a broker and a console worker, then instrument a pretend web application.

    Metrics appear every FLUSH seconds; Ctrl-C stops everything cleanly. If
    the broker or the worker exits (a port in use, say), the demo says which
    and exits with status 1.
    """
    stop = threading.Event()
    install_stop_handlers(stop)
    received = _remember_signals()
    daemons = start_daemons(port, flush, format_, web_listen if web else None)
    click.echo(f"zibrato demo: broker on {port}, console worker flushing every {flush:g} s; Ctrl-C to stop", err=True)
    if web:
        click.echo(f"zibrato demo: live charts at {web_url(web_listen)}", err=True)
    died: list[tuple[str, int]] = []
    threading.Thread(target=watch, args=(daemons, stop, died), name="zibrato-demo-watch", daemon=True).start()
    try:
        with Zibrato(port=port, source="demo", process_metrics=True) as z:
            run_workload(z, stop, duration)
    finally:
        stop.set()
        stop_daemons(daemons, received[0] if received else signal.SIGTERM)
    if died:
        name, code = died[0]
        click.echo(
            f"zibrato demo: the {name} exited with status {code} (its log above says why); stopped the rest", err=True
        )
        raise SystemExit(1)


def start_daemons(port: int, flush: float, format_: str, web_listen: str | None = None) -> dict[str, subprocess.Popen]:
    """The broker and the console worker (and the web worker), by name, in the order they must stop.

    Each in its own session, so that Ctrl-C reaches only the demo, which stops them in order.
    """
    python = [sys.executable, "-m", "zibrato"]
    broker = ["broker", "--port", str(port), "--startup-grace", "0.3"]
    # The application's metrics only: the worker's own (level 'zibrato') would fill half the table.
    worker = [
        "console",
        "--broker",
        f"127.0.0.1:{port + 1}",
        "--flush",
        str(flush),
        "--format",
        format_,
        "--no-self-metrics",
    ]
    commands = [("broker", broker), ("console worker", worker)]
    if web_listen is not None:
        commands.append(
            (
                "web worker",
                [
                    "web",
                    "--broker",
                    f"127.0.0.1:{port + 1}",
                    "--flush",
                    str(flush),
                    "--no-self-metrics",
                    "--listen",
                    web_listen,
                ],
            )
        )
    return {name: subprocess.Popen(python + argv, start_new_session=True) for name, argv in commands}


def web_url(listen: str) -> str:
    """'127.0.0.1:8080' -> 'http://127.0.0.1:8080/' (the web worker checks the value itself)."""
    return f"http://{listen}/"


def watch(daemons: dict[str, subprocess.Popen], stop: threading.Event, died: list[tuple[str, int]]) -> None:
    """Until ``stop``: when a daemon exits, record its name and exit code and stop the demo.

    A daemon found dead only once ``stop`` is set was stopped by the demo (or by Ctrl-C).
    """
    while not stop.wait(0.1):
        for name, daemon in daemons.items():
            if daemon.poll() is not None and not stop.is_set():
                died.append((name, daemon.returncode))
                stop.set()
                return


def _remember_signals() -> list[int]:
    """The stop signals this process receives, in order (the stop handlers still run).

    The daemons run in their own sessions, so Ctrl-C reaches only the demo; it
    passes on the same signal, and their logs say SIGINT for Ctrl-C, not SIGTERM.
    """
    received: list[int] = []
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)

        def handler(number: int, frame: object, previous: object = previous) -> None:
            received.append(number)
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)
    return received


def stop_daemons(daemons: dict[str, subprocess.Popen], signum: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """One after the other, broker first: what it drains from clients still reaches the worker."""
    for daemon in daemons.values():
        if daemon.poll() is None:
            daemon.send_signal(signum)
        try:
            daemon.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - our daemons stop on TERM within seconds
            daemon.kill()
            daemon.wait()


def run_workload(z: Zibrato, stop: threading.Event, duration: float | None) -> None:
    """A pretend web application: requests (info), queries (debug), queue depth (warn), errors (crit)."""
    rng = random.Random(7)

    @z.time_me("debug", "db.query")
    def query() -> None:
        stop.wait(rng.expovariate(1 / 0.002))

    @z.time_me("info", "web.request", outcome=True)
    def handle_request() -> None:
        for _ in range(rng.randint(1, 3)):
            query()
        if rng.random() < 0.05:
            raise ConnectionError("upstream went away")

    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        try:
            handle_request()
        except ConnectionError:
            z.count("crit", "web.errors")
        if rng.random() < 0.1:
            z.count("info", "signup")
        z.gauge("warn", "queue.depth", rng.randint(0, 40))
        stop.wait(0.02)
