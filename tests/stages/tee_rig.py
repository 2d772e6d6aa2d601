"""The set-up the late-branch tests of fc-tee share: a site of ``n`` files, named FIFOs, durable branch readers
(fc-relay: tests/relay.py) writing what they take into ``<k>.jsonl``, one log for every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tests.conftest import RELAY, ROOT

BIN = ROOT / "bin"


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    command = RELAY if cmd == "fc-relay" else BIN / cmd  # fc-relay: a durable stage (tests/relay.py)
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


class TeeRig:
    def __init__(self, tmp_path: Path, n: int, fifos: Iterable[str], name: str = "f{:03d}.txt"):
        self.site = tmp_path / "site"
        self.site.mkdir()
        for i in range(n):
            (self.site / name.format(i)).write_text(str(i))
        self.want = {name.format(i) for i in range(n)}
        self.fifo = {k: tmp_path / f"{k}.fifo" for k in fifos}
        for f in self.fifo.values():
            os.mkfifo(f, 0o600)
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.tmp = tmp_path
        self.log = (tmp_path / "log").open("wb")

    def out(self, k: str) -> Path:
        return self.tmp / f"{k}.jsonl"

    def branch(self, k: str, state: str = "relay") -> subprocess.Popen[bytes]:
        """A durable reader of FIFO ``k``, its state file ``<state>-<k>.db``."""
        return fc("fc-relay", "--min-size", "0", "--input", str(self.fifo[k]), "--output", str(self.out(k)),
                  "--state", str(self.state / f"{state}-{k}.db"), stderr=self.log)  # fmt: skip

    def rels(self, k: str) -> set[str]:
        """The files branch ``k`` has taken (its whole lines that are events)."""
        if not self.out(k).exists():
            return set()
        lines = self.out(k).read_text().splitlines()
        return {json.loads(x)["rel"] for x in lines if x.endswith("}") and '"rel"' in x}

    def wait_all(self, k: str, timeout: float) -> set[str]:
        """Wait until branch ``k`` has every file, at most ``timeout`` s; what it lacks then."""
        deadline = time.monotonic() + timeout
        while self.rels(k) != self.want and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.want - self.rels(k)

    def watch(self) -> subprocess.Popen[bytes]:
        """fc-watch of the site into FIFO ``w``."""
        return fc("fc-watch", "--state", str(self.state / "watch.db"), "--output", str(self.fifo["w"]),
                  str(self.site), stderr=self.log)  # fmt: skip
