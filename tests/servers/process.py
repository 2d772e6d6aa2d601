"""A server process the tests can start, kill (like a crash: SIGKILL, children included) and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``: sshd's per-connection children start their own sessions, so
    killing a process group would miss them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return [d for c in found for d in (c, *children(c))]


class ServerProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
    ):
        self.name, self.argv, self.port, self.log = name, list(argv), port, log
        self.env = {**os.environ, **(env or {})}
        # A session of its own: a Ctrl-C at the terminal goes to the process that started it (tools/try-server),
        # which then stops it, instead of to the server too.
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port}:\n{self.log.read_text()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Crash the server: SIGKILL to it and every process it spawned."""
        if self.proc is None:
            return
        for pid in [*children(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.kill()
