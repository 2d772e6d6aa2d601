"""A command run as a program ends without the interpreter's teardown (launch.exit_now): freeing every module and
object one by one took 15-20 ms of CPU at the end of every stage, the last stage's on the pipeline's time (issue
18).  What a normal exit does besides still happens: atexit handlers, the flush of stdout and stderr, the exit
status, and the wait for a thread that is not a daemon (then the exit is the normal one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Loaded at interpreter start (site): an atexit handler, an object freed only by the teardown, and (with
# FC_TEST_THREAD) a thread that is no daemon and ends a moment after the main thread's end (it ended 0.5 s after
# the start, and on a loaded machine fc-filter took longer than that: no thread ran at its end, so no teardown).
SITECUSTOMIZE = """
import atexit, os, threading, time

class Late:
    def __del__(self):
        os.write(2, b"teardown\\n")

late = Late()
atexit.register(lambda: os.write(2, b"atexit\\n"))
if os.environ.get("FC_TEST_THREAD"):
    def late_thread():
        while threading.main_thread().is_alive():
            time.sleep(0.01)
        time.sleep(0.2)
        os.write(2, b"thread done\\n")

    threading.Thread(target=late_thread).start()
"""


def run(tmp_path: Path, *args: str, thread: bool = False) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT / 'lib'}", "FC_STATE_DIR": str(tmp_path / "state")}
    env.pop("FC_TEST_THREAD", None)
    if thread:
        env["FC_TEST_THREAD"] = "1"
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-filter"), *args],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_stage_ends_with_its_atexit_handlers_and_without_the_teardown(tmp_path: Path) -> None:
    p = run(tmp_path, "--extensions", "bin")
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == ["atexit"]


def test_the_exit_status_and_the_messages_are_kept(tmp_path: Path) -> None:
    p = run(tmp_path, "--no-such-flag")
    assert p.returncode == 2
    assert "fc-filter: error: unrecognized arguments: --no-such-flag" in p.stderr
    assert "teardown" not in p.stderr and p.stderr.splitlines()[-1] == "atexit"


def test_a_thread_still_running_is_waited_for_as_by_a_normal_exit(tmp_path: Path) -> None:
    p = run(tmp_path, "--extensions", "bin", thread=True)
    assert p.returncode == 0, p.stderr
    assert "thread done" in p.stderr.splitlines()
    assert "atexit" in p.stderr.splitlines() and "teardown" in p.stderr.splitlines()
