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


def operator_mode() -> tuple[str, str]:
    """A configuration for nats-server in operator mode (accounts and users as signed JWTs, as NGS or a
    `nsc`-managed server has them) and the text of a user's credentials file for it (its JWT and nkey seed):
    (config with STORE for the store, credentials).  The JWTs are made here, signed with nkeys made here."""
    import base64
    import json
    import os
    import time

    import nkeys

    from fileconveyor.digests import sha256

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    def pair(prefix: int) -> tuple[str, str, object]:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        kp = nkeys.from_seed(bytearray(seed))
        return seed.decode(), kp.public_key.decode(), kp

    def jwt(signer: object, iss: str, sub: str, name: str, nats: dict) -> str:
        claims = {"iat": int(time.time()), "iss": iss, "name": name, "sub": sub, "nats": nats}
        claims["jti"] = base64.b32encode(sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
        signed = f"{b64(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())}.{b64(json.dumps(claims).encode())}"
        return f"{signed}.{b64(signer.sign(signed.encode()))}"  # type: ignore[attr-defined]

    _, op_pub, op = pair(nkeys.PREFIX_BYTE_OPERATOR)
    _, acc_pub, acc = pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, sys_pub, _ = pair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
    user_seed, user_pub, _ = pair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    account = {"limits": {**unlimited, "leaf": -1, **jetstream}, "type": "account", "version": 2}
    user = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    config = (
        f"operator: {jwt(op, op_pub, op_pub, 'op', {'type': 'operator', 'version': 2})}\n"
        f"system_account: {sys_pub}\nresolver: MEMORY\nresolver_preload: {{\n"
        f"  {acc_pub}: {jwt(op, op_pub, acc_pub, 'fc', account)}\n"
        f"  {sys_pub}: {jwt(op, op_pub, sys_pub, 'SYS', {'type': 'account', 'version': 2})}\n}}\n"
        "jetstream { store_dir: STORE }\n"
    )
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{jwt(acc, acc_pub, user_pub, 'fc', user)}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    )
    return config, creds
