"""The test process ends after its session even when a test leaves a thread behind (support.exit_guard)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from expecter import expect

TESTS = Path(__file__).resolve().parent

LEFTOVER = """
import threading

def wait_forever():
    threading.Event().wait()

def test_leaves_a_thread_that_never_ends():
    threading.Thread(target=wait_forever, name="never-ends").start()
"""


def _pytest(tmp_path: Path, source: str, grace: str = "1", xdist: bool = False) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_leftover.py").write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=str(TESTS), ZIBRATO_TEST_EXIT_GRACE=grace)
    workers = ["-n", "1"] if xdist else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            *workers,
            "-p",
            "support.exit_guard",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_passing_session_with_a_leftover_thread_ends_and_fails_naming_the_thread(tmp_path: Path) -> None:
    done = _pytest(tmp_path, LEFTOVER)
    expect(done.stdout).contains("1 passed")
    expect(done.returncode) == 1
    expect(done.stderr).contains("threads still alive: 'never-ends'")
    expect(done.stderr).contains("in wait_forever")  # its stack says where it waits


def test_a_failing_session_keeps_its_exit_status(tmp_path: Path) -> None:
    done = _pytest(tmp_path, LEFTOVER + "\n\ndef test_fails():\n    assert False\n")
    expect(done.stdout).contains("1 failed, 1 passed")
    expect(done.returncode) == 1
    expect(done.stderr).contains("'never-ends'")


def test_a_session_that_ends_cleanly_is_left_alone(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "def test_nothing():\n    pass\n", grace="60")
    expect(done.returncode) == 0
    expect(done.stderr).does_not_contain("did not end")


def test_a_pytest_xdist_worker_names_its_leftover_thread_and_ends(tmp_path: Path) -> None:
    done = _pytest(tmp_path, LEFTOVER, xdist=True)
    expect(done.stdout).contains("1 passed")
    expect(done.stderr + done.stdout).contains("'never-ends'")
