"""A real nats-server with JetStream on a free 127.0.0.1 port, its store in a temporary directory, so a test
can kill it (SIGKILL, like a crash) and start it again on the same port and store.

nats-server comes from Debian (``scripts/install-system-deps test`` installs it): in CI a missing one fails
the run, elsewhere the test is skipped (tests.conftest.unavailable)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool, unavailable

from .process import ServerProcess, free_port


@dataclass
class NatsServer:
    process: ServerProcess
    store: Path  # the JetStream store directory (-sd): kept across a kill and restart

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stream_url(self, stream: str = "FC") -> str:
        return f"{self.url}/{stream}"

    def kill(self) -> None:
        self.process.kill()

    def start(self) -> None:
        self.process.start()


def start_nats(d: Path, config: str | None = None) -> NatsServer:
    """``config``: the text of a configuration file (users, permissions) for ``-c``, its ``STORE`` replaced by the
    store directory (nats-server refuses ``-sd`` beside a ``store_dir``); the port and address given on the command
    line win over its own."""
    binary = require_tool("nats-server", "the broker tests run a real one")
    if importlib.util.find_spec("nats") is None:
        unavailable("nats-py is not installed (pip install -e '.[test]' installs it)")
    store = d / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "-js", "-sd", str(store), "-p", str(port), "-a", "127.0.0.1"]
    if config is not None:
        (d / "nats-server.conf").write_text(config.replace("STORE", str(store)))
        argv = [binary, "-c", str(d / "nats-server.conf"), "-p", str(port), "-a", "127.0.0.1"]
    server = NatsServer(ServerProcess("nats-server", argv, port, d / "nats-server.log"), store)
    server.start()
    return server


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One server per test: tests kill and restart it, and each wants an empty store."""
    server = start_nats(tmp_path / "nats")
    yield server
    server.kill()
