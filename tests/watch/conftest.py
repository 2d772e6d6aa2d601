"""Fixtures for the fc-watch suite: a launcher for real fc-watch processes (with a
leak check at teardown) and the backend matrix the shared behaviour tests run on."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.watch.harness import MARK_ENV, Done, FcWatch, marked_pids, run_once


@dataclass(frozen=True)
class Backend:
    """How one backend is run in the tests, and how long its events may take."""

    name: str
    args: tuple[str, ...]
    settle: float
    interval: float = 0.0

    @property
    def quiet(self) -> float:
        """How long "nothing more arrives" must last: a poll plus a settle, at least 0.3 s."""
        return max(0.3, self.settle + self.interval)

    def with_settle(self, settle: float) -> Backend:
        """The same backend with a longer --settle: for tests whose timing must not depend on load."""
        return replace(self, args=(*self.args, "--settle", str(settle)), settle=settle)

    @property
    def timeout(self) -> float:
        """How long an expected event may take: ample, as they come within a second."""
        return 10.0


BACKENDS = {
    "inotify": Backend("inotify", ("--backend", "inotify", "--settle", "0.2"), settle=0.2),
    # Polling cannot see a close(): a file counts as done once its size and mtime held still
    # for --settle (tests with slow or repeated writes raise it: Backend.with_settle).
    "polling": Backend("polling", ("--backend", "polling", "--interval", "0.1", "--settle", "0.3"), 0.3, 0.1),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@dataclass
class Launcher:
    """Starts fc-watch processes for one test, each with ``-v`` and a --state in tmp_path."""

    tmp: Path
    mark: str
    started: list[FcWatch] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[MARK_ENV] = self.mark
        env["FC_STATE_DIR"] = str(self.tmp / "default-state")
        env.pop("FC_SYNC", None)
        return env

    def state(self, name: str = "state.db") -> Path:
        return self.tmp / name

    def argv(self, args: tuple[str | os.PathLike[str], ...], state: Path | None) -> list[str]:
        return ["-v", "--state", str(state or self.state()), *(os.fsdecode(a) for a in args)]

    def start(
        self,
        *args: str | os.PathLike[str],
        state: Path | None = None,
        ready: bool = True,
        preexec: Callable[[], None] | None = None,
    ) -> FcWatch:
        w = FcWatch(self.argv(args, state), self.env(), preexec)
        self.started.append(w)
        if ready:
            w.wait_ready()
        return w

    def live(
        self, backend: Backend, *args: str | os.PathLike[str], state: Path | None = None, ready: bool = True
    ) -> FcWatch:
        return self.start(*backend.args, *args, state=state, ready=ready)

    def scan_once(
        self,
        *args: str | os.PathLike[str],
        state: Path | None = None,
        timeout: float = 60.0,
        preexec: Callable[[], None] | None = None,
    ) -> Done:
        return run_once(["--scan-once", *self.argv(args, state)], self.env(), timeout, preexec)

    def stop_in_sync(self, w: FcWatch, preexec: Callable[[], None] | None = None) -> None:
        """SIGTERM ``w`` (exit 143), then a --scan-once on its state must find nothing new:
        what it reported is exactly what is on disk."""
        rc = w.terminate()
        assert rc == 143, f"SIGTERM should exit 143, got {rc}:\n{w.stderr}"
        assert not w.bad_lines and w.torn is None, f"invalid or torn lines: {w.bad_lines[:3]} {w.torn!r}"
        again = run_once([*w.argv, "--scan-once"], self.env(), preexec=preexec)
        assert again.status == 0, again.stderr
        assert again.events == [], f"live run left these changes unreported: {again.events}"


# -- unreadable directories ------------------------------------------------------------

_PR_CAPBSET_DROP = 24
_DAC_CAPS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _drop_dac_caps() -> None:
    """In the child, before exec: without these capabilities root obeys chmod 000 too."""
    for cap in _DAC_CAPS:
        if _prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="session")
def no_dac_override(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], None] | None:
    """A preexec_fn under which fc-watch cannot read a chmod 000 directory (None: not needed).

    Root reads a chmod 000 directory anyway (CAP_DAC_OVERRIDE), so as root fc-watch is
    started with that capability and CAP_DAC_READ_SEARCH dropped from its bounding set.
    Skips when even that cannot make a directory unreadable here."""
    locked = tmp_path_factory.mktemp("perm") / "locked"
    locked.mkdir()
    preexec = _drop_dac_caps if os.geteuid() == 0 else None
    locked.chmod(0)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])", str(locked)],
            capture_output=True,
            preexec_fn=preexec,
            timeout=30,
        )
    except subprocess.SubprocessError as exc:
        probe = None
        reason = f"cannot drop CAP_DAC_OVERRIDE: {exc}"
    finally:
        locked.chmod(0o755)
    if probe is None or probe.returncode == 0:
        msg = (
            reason
            if probe is None
            else "a chmod 000 directory stays readable here even without "
            "CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: cannot test unreadable directories"
        )
        unavailable(msg)
    return preexec


# -- leaks ------------------------------------------------------------------------------

_outcome_key = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_outcome_key] = report.passed
    return report


@pytest.fixture(autouse=True)
def leak_mark(request: pytest.FixtureRequest) -> Iterator[str]:
    """Fail a test that leaves any fc-watch it started running (found by an environment
    mark, so processes started through a shell count too).  Leftovers are killed."""
    mark = uuid.uuid4().hex
    yield mark
    leaked = marked_pids(mark)
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if leaked and request.node.stash.get(_outcome_key, False):
        pytest.fail(f"test leaked running fc-watch processes: {leaked}")


@pytest.fixture
def fc(request: pytest.FixtureRequest, tmp_path: Path, leak_mark: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, leak_mark)
    yield launcher
    leaked = []
    for w in launcher.started:
        if w.proc.poll() is None:
            leaked.append(w.pid)
            w.proc.kill()
        w.wait_exit(10)
    passed = request.node.stash.get(_outcome_key, False)
    if leaked and passed:
        pytest.fail(f"test left fc-watch processes running: {leaked}")
    if passed:  # remove its trees now, while cached: pytest's own clean-up of a cold tree is far slower
        shutil.rmtree(tmp_path, ignore_errors=True)
