"""Start-up: a stage run imports only what that run uses (issue 18, ranked change 6).

Every stage of a pipeline pays its imports on every run: a cron run of an unchanged tree is mostly start-up.
Each stage is run for real (empty input, fresh state) under ``-X importtime``, which names every module the
process imported; the heavy ones below are needed only by some runs (plugins from entry points, parallel
scans, isolated transporters, one processor or transporter of many) and must wait until such a run needs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# importlib.metadata reads every installed distribution (20-80 ms of CPU); multiprocessing 15 ms
NEVER_AT_START = ("importlib.metadata", "multiprocessing", "email")
# hashlib loads OpenSSL's libcrypto and sets up its digests: about 5 MB of RSS in each stage of a pipeline, for
# blake2b and sha256 that Python has built in (fileconveyor/digests.py); secrets and hmac import hashlib
NO_OPENSSL = ("hashlib", "_hashlib", "secrets", "hmac")
# for a mistake (difflib: did you mean), an old daemon's database (pickle) or a connection (socket) only
NOT_LOCAL = ("difflib", "pickle", "socket")
# module -> the stages whose runs use it.  argparse imports shutil (with bz2 and lzma, 0.6 MB) for the terminal's
# width, which cli/_common.py finds itself; random is for back-off jitter, after a failure; fc-process's work files
# use both (tempfile); ctypes is for openat2 (beneath.py), which fc-watch and fc-filter do not call
ONLY_IN = {
    "shutil": ("process",),
    "random": ("process",),
    "ctypes": ("process", "transport", "record"),
    "subprocess": ("process",),  # a processor's tool; children.py's end() and fc-watch's scan workers need none
}
# logging (with traceback, string and textwrap: 3-7 ms of each start) for a run that logs only: the library's
# loggers come from report.get_logger, and an info message nobody can see (-v not given) imports nothing
# (private.tighten of a state directory made 0755 by mkdir, as the benchmarks do); traceback for a failure;
# platform (2 ms) told fc-watch the system, which sys.platform says
ON_DEMAND = ("logging", "traceback", "platform")
# dataclasses imports inspect, ast, dis and tokenize (5-8 ms) and compiles each class's methods with exec (0.4-1 ms
# a class): the classes on a stage's path are plain classes, and a stage run uses none.
NO_DATACLASSES = ("watch", "filter", "process", "transport", "record")
# what one processor or transporter needs, when another one is used
NOT_THIS_RUN = ("PIL", "paramiko", "boto3", "botocore", "swiftclient", "ftplib", "rcssmin", "rjsmin")


def imported(argv: list[str], tmp_path: Path, stdin: bytes = b"") -> set[str]:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT / "lib")}
    p = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], input=stdin, capture_output=True, env=env, timeout=60
    )
    lines = p.stderr.decode(errors="replace").splitlines()
    assert p.returncode == 0, "\n".join(line for line in lines if not line.startswith("import time:"))
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and "|" in line}


# what only other stages use: the records database (fc-record, fc-transport --record-db, --status), plugins
# and what only some runs of a stage use: an old daemon's import and --status (fc-record), --record-db
# (fc-transport, fc-process), --delete-source-after (fc-record); the --source roots are fileconveyor.roots
OTHER_STAGES = {
    "watch": ("fileconveyor.records", "fileconveyor.processors", "fileconveyor.transporters"),
    "filter": ("fileconveyor.records", "fileconveyor.processors", "fileconveyor.transporters"),
    "transport": ("fileconveyor.records", "fileconveyor.stages.record"),
    "process": ("fileconveyor.records", "fileconveyor.stages.record"),
    "record": (
        "fileconveyor.stages.record.old_daemon",
        "fileconveyor.stages.record.delete",
        "fileconveyor.stages.record.status",
    ),
}


def heavy(modules: set[str], stage: str = "") -> list[str]:
    other = OTHER_STAGES.get(stage, ())
    return sorted(
        m
        for m in modules
        if m.split(".")[0] in NOT_THIS_RUN
        or m.startswith(NEVER_AT_START)
        or m in NO_OPENSSL
        or m in NOT_LOCAL
        or m in ON_DEMAND
        or (m in ONLY_IN and bool(stage) and stage not in ONLY_IN[m])
        or (m == "dataclasses" and stage in NO_DATACLASSES)
        or (bool(other) and m.startswith(other))
    )


@pytest.mark.parametrize(
    "stage,args",
    [
        ("watch", ["--scan-once", "{src}"]),
        ("filter", ["--extensions", "bin"]),
        ("process", ["--chain", "filename.SpacesToUnderscores"]),
        ("transport", ["--to", "file://{dest}"]),
        ("record", ["--db", "{db}"]),
    ],
)
def test_a_stage_run_imports_only_what_it_uses(tmp_path: Path, stage: str, args: list[str]) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o755)  # as mkdir leaves it: the stage makes it owner-only, and says so with -v
    names = {"src": tmp_path / "src", "dest": tmp_path / "dest", "db": tmp_path / "synced.db"}
    modules = imported([str(ROOT / "bin" / f"fc-{stage}"), *(a.format(**names) for a in args)], tmp_path)
    assert "fileconveyor.events" in modules  # the check sees the stage's own imports
    assert heavy(modules, stage) == []
