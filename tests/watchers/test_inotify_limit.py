"""The inotify watch limit: a clear message, and the directories that could not be
watched are polled, so their changes still arrive.

The limit is lowered inside a user namespace (user.max_inotify_watches, Linux
5.11+), which leaves the machine's own limit alone."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, require_tool, unavailable

LIMIT = 12


def _userns_works() -> bool:
    probe = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", f"echo {LIMIT} > /proc/sys/user/max_inotify_watches"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def _read(stream, deadline: float) -> bytes:  # type: ignore[no-untyped-def]
    """What the pipe has, waiting at most until ``deadline``."""
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    return os.read(stream.fileno(), 65536) if ready else b""


def test_watch_limit_falls_back_to_polling(tmp_path: Path) -> None:
    require_tool("unshare", "util-linux")
    if not _userns_works():
        msg = "cannot lower the inotify limit in a user namespace here"
        unavailable(msg)
    root = tmp_path / "site"
    for i in range(40):
        (root / f"d{i:02d}" / "sub").mkdir(parents=True)
    cmd = [
        "unshare", "-Ur", "sh", "-c",
        f'echo {LIMIT} > /proc/sys/user/max_inotify_watches && exec "$@"', "sh",
        sys.executable, str(ROOT / "bin" / "fc-watch"), "-v", "--settle", "0.1", "--interval", "0.2",
        "--jobs", "1", "--state", str(tmp_path / "state.db"), str(root),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        stderr = b""
        while b"ready:" not in stderr and time.monotonic() < deadline:
            stderr += _read(proc.stderr, deadline)
        assert b"ready:" in stderr, stderr.decode()
        text = stderr.decode()
        assert "inotify watch limit reached" in text and "fs.inotify.max_user_watches = " in text
        assert f"this user namespace allows {LIMIT}" in text
        # d39 sorts last: it is certainly beyond the first LIMIT watched directories.
        late = root / "d39" / "sub" / "late.txt"
        late.write_text("arrives by polling")
        early = root / "d00" / "early.txt"
        early.write_text("arrives by inotify")
        got: dict[str, str] = {}
        buf = b""
        while len(got) < 2 and time.monotonic() < deadline:
            buf += _read(proc.stdout, deadline)
            *lines, buf = buf.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                got[ev["rel"]] = ev["via"]
        assert got.get("d39/sub/late.txt") == "scan"  # found by polling the unwatched subtree
        assert got.get("d00/early.txt") == "inotify"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 143
