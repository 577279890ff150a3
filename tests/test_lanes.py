"""The two test lanes: the ``daemon`` marker is derived from the code a test uses, and a test
outside that lane that starts a process anyway fails, saying how to mark it (tests/support/lanes.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.daemons import Daemon, run_script
from support.lanes import ProcessInFastLane, SpawnGuard, SpawnReader, starts_process
from zibrato import protocol


def _starts_a_daemon(tmp_path):
    return Daemon(tmp_path, "zibrato-broker").start()


def _encodes_only():
    return protocol.encode("info", 0.0, [["c", "n", [1], None, []]])


class _Helper:
    def run(self):
        return run_script("zibrato", "--version")


def _through_a_helper_class():
    return _Helper().run()


def _imports_subprocess_inside():
    import subprocess as sp

    return sp.check_output(["true"])


def _forks():
    return os.fork()


def _nested():
    def inner():
        return subprocess.Popen(["true"])

    return inner


@starts_process
def _library_starts_it():
    return "selenium would start chromedriver here"


def _uses_the_declared_helper():
    return _library_starts_it()


# held in a dict, so that this module's tests (which name SAMPLES) are not marked themselves
SAMPLES = {
    "daemon": _starts_a_daemon,
    "pure": _encodes_only,
    "helper class": _through_a_helper_class,
    "import inside": _imports_subprocess_inside,
    "fork": _forks,
    "nested function": _nested,
    "declared helper": _uses_the_declared_helper,
}


@pytest.mark.parametrize(
    "sample, spawns",
    [
        ("daemon", True),
        ("helper class", True),
        ("import inside", True),
        ("fork", True),
        ("nested function", True),
        ("declared helper", True),
        ("pure", False),
    ],
)
def test_the_reading_finds_a_process_started_directly_or_through_any_helper_of_tests(sample, spawns):
    assert SpawnReader().spawns([SAMPLES[sample]]) is spawns


def test_this_modules_reading_tests_stay_in_the_fast_lane(request):
    assert request.node.get_closest_marker("daemon") is None


def test_a_test_using_the_process_helpers_is_marked_daemon(request):
    helper = Daemon  # naming the helper is enough for the marker (nothing starts here)
    assert helper is not None and request.node.get_closest_marker("daemon") is not None


def test_an_unmarked_test_starting_a_process_fails_with_how_to_mark_it():
    """Marked ``daemon`` itself (it names subprocess.run), so that only its own guard is armed."""
    guard = SpawnGuard()
    guard.watch("tests/test_x.py::test_y")
    try:
        with pytest.raises(ProcessInFastLane) as raised:
            subprocess.run(["true"], check=True)
    finally:
        caught = guard.release()
    assert caught and caught[0].startswith("subprocess.Popen true")
    message = str(raised.value)
    assert "tests/test_x.py::test_y started a process" in message
    assert "@pytest.mark.daemon" in message and "bin/test --fast" in message
    assert subprocess.run(["true"]).returncode == 0  # released: processes start again
