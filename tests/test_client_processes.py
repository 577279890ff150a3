"""The client in the process models applications use: multiprocessing (every start method,
Pool and its terminate()), os._exit after flush(), and gunicorn's pre-fork workers.

Each scenario is a real subprocess running a small script against the real
PULL socket of ``broker_pull``; every test counts exactly what arrived.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from expecter import expect

from conftest import select, wait_until
from support.daemons import free_ports

START_METHODS = ["fork", "spawn", "forkserver"]


def run_script(tmp_path, source: str, port: int, *args: str, timeout: float = 60) -> str:
    """Run ``source`` as a script (its own __main__, as spawn needs) and return its stdout."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, ZIBRATO_PORT=str(port))
    done = subprocess.run(
        [sys.executable, str(script), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def exactly(broker_pull, name: str, count: int) -> list:
    """Wait for ``count`` measurements called ``name``, then check that no more arrive."""
    broker_pull.receive_count(count, name, timeout=10)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # a duplicate would arrive right behind the rest
        if broker_pull.socket.poll(20):
            broker_pull._receive_available()
    return select(broker_pull.records, name)


POOL_SCRIPT = """
    import multiprocessing, sys
    from zibrato import Zibrato

    z = Zibrato(linger=2)

    def task(i):
        z.count("info", "pool.task", 1)
        return i

    if __name__ == "__main__":
        method, ending, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
        context = multiprocessing.get_context(method)
        if ending == "with":           # the usual idiom: leaving the block calls terminate()
            with context.Pool(2) as pool:
                assert pool.map(task, range(tasks), chunksize=50) == list(range(tasks))
        else:                          # close() and join(): the workers end normally
            pool = context.Pool(2)
            pool.map(task, range(tasks), chunksize=50)
            pool.close()
            pool.join()
        print("done")
"""


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("ending", ["with", "join"])
def test_pool_workers_lose_nothing_with_any_start_method(broker_pull, tmp_path, method, ending):
    tasks = 2_000
    run_script(tmp_path, POOL_SCRIPT, broker_pull.port, method, ending, str(tasks))
    expect(len(exactly(broker_pull, "pool.task", tasks))) == tasks


PROCESS_SCRIPT = """
    import multiprocessing, sys
    from zibrato import Zibrato

    z = Zibrato(interval=60)  # the sender never drains on its own: only the exit flush does

    def child():
        for i in range(100):
            z.count("info", "process.child", i)

    if __name__ == "__main__":
        process = multiprocessing.get_context(sys.argv[1]).Process(target=child)
        process.start()
        process.join(30)
        print(process.exitcode)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_process_child_of_any_start_method_registers_its_final_flush(broker_pull, tmp_path, method):
    expect(run_script(tmp_path, PROCESS_SCRIPT, broker_pull.port, method).strip()) == "0"
    received = exactly(broker_pull, "process.child", 100)
    expect(sorted(r.value for r in received)) == list(range(100))


TERMINATE_SCRIPT = """
    import multiprocessing, sys, time
    from zibrato import Zibrato

    z = Zibrato(interval=60)

    def child(ready):
        for i in range(100):
            z.count("info", "terminated.child", i)
        ready.set()
        time.sleep(60)  # terminate() finds it busy

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        ready = context.Event()
        process = context.Process(target=child, args=(ready,))
        process.start()
        assert ready.wait(30)
        process.terminate()
        process.join(30)
        print(process.exitcode)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_terminate_flushes_then_ends_the_child_by_sigterm(broker_pull, tmp_path, method):
    exitcode = run_script(tmp_path, TERMINATE_SCRIPT, broker_pull.port, method).strip()
    expect(exitcode) == str(-signal.SIGTERM)  # still ended by the signal, as the parent expects
    expect(len(exactly(broker_pull, "terminated.child", 100))) == 100


NOTED_BUT_UNHANDLED_SCRIPT = """
    import multiprocessing, signal, sys, threading, time
    from zibrato import Zibrato

    z = Zibrato(interval=60)

    def child(lock, ready):
        for i in range(50):
            z.count("info", "noted.child", i)  # starts the sender, hooks SIGTERM
        sleeper = threading.Thread(target=time.sleep, args=(60,), daemon=True)
        sleeper.start()

        def note_sigterm_elsewhere():
            ready.wait()
            time.sleep(0.3)  # the main thread is blocked in the lock's sem_wait by now
            # CPython notes it (in the sleeper) and never interrupts the main thread's wait: the race
            # of a SIGTERM landing just before a pool worker blocks on its task queue's lock
            signal.pthread_kill(sleeper.ident, signal.SIGTERM)

        threading.Thread(target=note_sigterm_elsewhere, daemon=True).start()
        ready.set()
        lock.acquire()  # held by the parent: blocks until a signal interrupts it

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        lock, ready = context.Lock(), context.Event()
        lock.acquire()
        process = context.Process(target=child, args=(lock, ready))
        process.start()
        process.join(20)
        if process.exitcode is None:  # the handler never ran: the child outlived its SIGTERM
            process.kill()
            process.join()
            print("hung")
        else:
            print(process.exitcode)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_sigterm_noted_while_the_main_thread_blocks_still_flushes_and_ends_the_child(broker_pull, tmp_path, method):
    """Pool.terminate() hung when a worker's SIGTERM landed just before it blocked on its queue's lock."""
    outcome = run_script(tmp_path, NOTED_BUT_UNHANDLED_SCRIPT, broker_pull.port, method).strip()
    expect(outcome) == str(-signal.SIGTERM)
    expect(len(exactly(broker_pull, "noted.child", 50))) == 50


INTERRUPTED_CALL_SCRIPT = """
    import multiprocessing, os, signal, sys
    from zibrato import Zibrato

    z = Zibrato(linger=2)

    def child(line, call):
        z.count("info", "interrupted." + call, line)  # starts the sender, hooks SIGTERM
        seen = 0

        def sigterm_at_that_line(frame, event, arg):
            nonlocal seen
            if event == "line":
                seen += 1
                if seen == line:
                    os.kill(os.getpid(), signal.SIGTERM)  # its handler runs right here
            return sigterm_at_that_line

        sys.settrace(sigterm_at_that_line)
        getattr(z, call)()
        sys.settrace(None)
        sys.exit(3)  # the call ran fewer lines than that: the sweep is complete

    if __name__ == "__main__":
        context = multiprocessing.get_context("fork")
        line, outcomes = 0, []
        while True:
            line += 1
            process = context.Process(target=child, args=(line, sys.argv[1]))
            process.start()
            process.join(5)  # the handler waits at most linger + 0.5 s
            if process.exitcode is None:  # the handler hung: say where, end it, stop
                process.kill()
                process.join()
                outcomes.append(f"hung-at-line-{line}")
                break
            elif process.exitcode == 3:
                break
            else:
                outcomes.append(str(process.exitcode))
        print(line - 1, " ".join(outcomes))
"""


@pytest.mark.parametrize("call", ["close", "flush"])
def test_a_sigterm_at_any_line_of_close_or_flush_still_delivers_and_ends_the_child(broker_pull, tmp_path, call):
    # Pool.terminate() races a worker's own exit, which is inside close(): the SIGTERM
    # handler then runs on top of any line of it (or of a task's flush()), and must neither
    # wait for a lock that line holds (it hung in the sender's Event.set, 1 Pool run in 100
    # under load) nor give up on the drain (its sender waited for flush()'s lock).
    lines, outcomes = run_script(tmp_path, INTERRUPTED_CALL_SCRIPT, broker_pull.port, call).split(maxsplit=1)
    expect(int(lines) > 5) == True  # the sweep really stopped inside the call
    expect(outcomes.split()) == [str(-signal.SIGTERM)] * int(lines)
    received = exactly(broker_pull, f"interrupted.{call}", int(lines) + 1)  # + the child that ended in peace
    expect(sorted(r.value for r in received)) == list(range(1, int(lines) + 2))


def blocked_signals(thread_id: int) -> set[int]:
    """The signals a thread of this process blocks, from Linux's /proc (SigBlk mask)."""
    with open(f"/proc/self/task/{thread_id}/status") as status:
        mask = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads Linux's /proc")
def test_the_sender_thread_leaves_termination_signals_to_the_main_thread(broker_pull):
    # A process-directed SIGTERM may land on any thread that does not block it; on the
    # sender it would wait for the main thread's next bytecode (a minute, in time.sleep(60)),
    # and Pool.terminate() of a busy child hung. 1 run in 7 did, before the sender blocked it.
    import threading

    from zibrato import Zibrato

    with Zibrato(port=broker_pull.port) as z:
        z.count("info", "signals.mask", 1)
        sender = next(t for t in threading.enumerate() if t.name == "zibrato-sender")
        wait_until(lambda: sender.native_id is not None, timeout=5)
        blocked = blocked_signals(sender.native_id)
    expect({signal.SIGTERM, signal.SIGINT, signal.SIGHUP} <= blocked) == True
    expect(signal.SIGTERM in blocked_signals(threading.main_thread().native_id)) == False


EXIT_SCRIPT = """
    import os
    from zibrato import Zibrato

    z = Zibrato(interval=60)
    tags = [f"padding:{'x' * 200}"]  # megabytes for ZeroMQ to write after flush() returns
    for i in range(90_000):  # within the queue bound (100,000)
        z.count("info", "exit.now", 1, tags=tags + [f"series:{i % 1000}"])
    z.flush()
    os._exit(0)
"""


def test_flush_then_os_exit_loses_nothing_when_the_broker_is_up(broker_pull, tmp_path):
    run_script(tmp_path, EXIT_SCRIPT, broker_pull.port)
    expect(len(exactly(broker_pull, "exit.now", 90_000))) == 90_000


# --- gunicorn --------------------------------------------------------------------------

WSGI_APP = """
    from zibrato import Zibrato

    z = Zibrato(source="web")

    @z.count_me("info", "gunicorn.request")
    def counted(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def app(environ, start_response):
        # the readiness probe is not counted: a probe that times out but is served would count twice
        if environ["PATH_INFO"] == "/ready":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ready"]
        return counted(environ, start_response)
"""


@pytest.mark.skipif(
    shutil.which("gunicorn", path=os.path.dirname(sys.executable)) is None, reason="gunicorn is in the test extras"
)
@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload-then-fork"])
def test_gunicorn_workers_deliver_every_request_exactly_once(broker_pull, tmp_path, preload):
    (tmp_path / "wsgiapp.py").write_text(textwrap.dedent(WSGI_APP))
    http_port = free_ports(1)
    command = [
        os.path.join(os.path.dirname(sys.executable), "gunicorn"),
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{http_port}",
        "--graceful-timeout",
        "5",
        "wsgiapp:app",
    ]
    if preload:
        command.insert(1, "--preload")
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=dict(os.environ, ZIBRATO_PORT=str(broker_pull.port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout=15, message="gunicorn to answer")
        requests = 200
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=5) as answer:
                assert answer.read() == b"ok"
        expect(len(exactly(broker_pull, "gunicorn.request", requests))) == requests
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    expect(len(select(broker_pull.records, "gunicorn.request"))) == requests
