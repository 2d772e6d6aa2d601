"""What the README tells a newcomer to run, run as written: its config.xml and tools/try-server.

tools/try-server is run as a user runs it, a real process in a session of its own (a terminal's job), whose output
is read for the URL, key or password and <server> it prints; Ctrl-C is a SIGINT to that session."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, unavailable

README = ROOT / "README.md"
TRY_SERVER = ROOT / "tools" / "try-server"


def readme_block(heading: str, lang: str) -> str:
    """The first ```lang block of the README after the line ``heading``: the text a reader copies."""
    text = README.read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"README.md has no {heading!r}"
    after = text.split(f"\n{heading}\n", 1)[1]
    m = re.search(rf"^```{lang}\n(.*?)^```$", after, re.S | re.M)
    assert m, f"no ```{lang} block after {heading!r}"
    return m.group(1)


@dataclass
class TryServer:
    proc: subprocess.Popen[str]
    printed: list[str] = field(default_factory=list)

    def line(self, prefix: str) -> str:
        """The printed line that starts with ``prefix`` (after its indent)."""
        found = [x.strip() for x in self.printed if x.strip().startswith(prefix)]
        assert len(found) == 1, (prefix, self.printed)
        return found[0]

    @property
    def commands(self) -> list[str]:
        """The shell commands it prints to send the demo site."""
        return [x.strip() for x in self.printed if x.startswith(("  export ", "  fc-watch "))]

    @property
    def server_xml(self) -> str:
        """Its <server> element for config.xml."""
        start = next(i for i, x in enumerate(self.printed) if x.strip().startswith("<server "))
        end = next(i for i, x in enumerate(self.printed) if x.strip() == "</server>")
        return "\n".join(self.printed[start : end + 1])

    @property
    def files(self) -> Path:
        return Path(self.line("its files:").split(":", 1)[1].strip())

    def ctrl_c(self) -> tuple[int, str]:
        """Ctrl-C at its terminal: SIGINT to its session.  Its exit status and the rest of its output."""
        os.killpg(self.proc.pid, signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, rest


def start_try_server(kind: str, *args: str) -> TryServer:
    proc = subprocess.Popen(
        [sys.executable, str(TRY_SERVER), kind, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    t = TryServer(proc)
    assert proc.stdout is not None
    for line in proc.stdout:  # until it says it is up (or ends: then the test fails with what it said)
        t.printed.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops it."):
            return t
    proc.wait(timeout=60)
    said = "\n".join(t.printed)
    if proc.returncode == 3:  # sshd or pyftpdlib is not installed: it says which
        unavailable(said)
    raise AssertionError(f"tools/try-server {kind} exited with {proc.returncode}:\n{said}")


@pytest.fixture
def try_sftp() -> Iterator[TryServer]:
    t = start_try_server("sftp")
    yield t
    if t.proc.poll() is None:
        t.ctrl_c()
