"""Shared test helpers.  Everything runs against real files, real inotify and
real servers; in CI (CI=true) a missing tool or server fails the run instead of
skipping it."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from fileconveyor.cli._common import Streams  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(msg: str) -> NoReturn:
    """Something a test needs is missing here: a failure in CI (CI=true), a skip elsewhere."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def require_tool(name: str, why: str = "") -> str:
    """Path of an external tool; a missing one fails in CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed{': ' + why if why else ''} (make test-deps installs it)")
    return path


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: str


class _Stderr(io.StringIO):
    def isatty(self) -> bool:
        return False


def call(main: Callable[..., int], argv: Sequence[str], stdin: bytes = b"") -> Result:
    """Run a command's main() in-process with its own streams."""
    out, err = io.BytesIO(), _Stderr()
    status = main(list(argv), Streams(stdin=io.BytesIO(stdin), stdout=out, stderr=err))
    return Result(int(status), out.getvalue(), err.getvalue())


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep default state files inside the test's temporary directory."""
    d = tmp_path / "state"
    monkeypatch.setenv("FC_STATE_DIR", str(d))
    return d


def held_for(seconds: float, verb: str) -> list[str]:
    """The command line of ``fc-<verb>`` (as ``bin/fc-<verb>`` runs it) whose wait for a writer's replay is
    ``seconds`` instead of 10 (delivery/durable.Holding.AWAIT_SECONDS): for a test whose writer never replays (its
    acknowledgement refused or locked out) and that waits for the lines to be taken all the same."""
    module = "tests.relay" if verb == "relay" else f"fileconveyor.cli.{verb}"  # relay: tests/relay.py
    code = (
        "import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; from fileconveyor.delivery.durable import "
        f"Holding; Holding.AWAIT_SECONDS = {float(seconds)!r}; from {module} import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code, str(ROOT / "lib"), str(ROOT)]


# fc-filter's conditions run by the durable runner (tests/relay.py): the stage the durability tests kill and restart
RELAY = ROOT / "tests" / "bin" / "fc-relay"


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """A site: each relative path in ``files`` written with its text (parents made); returns ``root``."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def work_dir_for(work: Path, path: Path | str, rel: str, make: bool = True) -> Path:
    """``work``/<the directory fc-process makes for the work files of the event of ``path`` and ``rel``> (made,
    parents too, unless ``make`` is false): a stage takes an event's ``file`` only from a directory named for that
    event (sourcefile.work_prefix), so a test that makes fc-process's work files by hand makes them there."""
    from fileconveyor.sourcefile import work_prefix

    where = work / (work_prefix({"path": str(path), "rel": rel}) + b"testtest").decode()
    if make:
        where.mkdir(parents=True, exist_ok=True)
    return where
