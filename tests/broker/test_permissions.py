"""The server's permissions, from examples/nats-server.conf as shipped, against a real nats-server: the
publisher's user may publish events, a worker's may not (its publish is refused and nothing is stored), and the
whole pipeline (fc-publish, fc-consume with leases and the shared fence) works with exactly these rights; the
credentials come from the environment or an nkey seed file, never the command line."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.test_broker import fc, finish, make_src, scan_and_publish, start_workers, tree
from tests.broker.test_trust import publish_raw
from tests.conftest import ROOT
from tests.servers.nats import NatsServer, operator_mode, start_nats

PUB_PW, WORK_PW = "pub-Pw:1@x", "work-Pw#2/y"


def nkey_pair() -> tuple[str, str]:
    """A user nkey made here: (seed, public key)."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsServer, str]]:
    """nats-server with the example's users (passwords and store put in) and an nkey user with the worker's
    rights; yields the server and the nkey seed."""
    seed, public = nkey_pair()
    text = (ROOT / "examples" / "nats-server.conf").read_text()
    text = text.replace("listen: 0.0.0.0:4222\n", "").replace("store_dir: /var/lib/nats", "store_dir: STORE")
    text = re.sub(r'"\$2a\$11\$REPLACE[^"]*PUBLISHERS[^"]*"', f'"{PUB_PW}"', text)
    text = re.sub(r'"\$2a\$11\$REPLACE[^"]*WORKERS[^"]*"', f'"{WORK_PW}"', text)
    text = text.replace("  ]\n}", f"    {{ nkey: {public}, permissions: $WORKER }}\n  ]\n}}")
    server = start_nats(tmp_path / "nats", text)
    yield server, seed
    server.kill()


def test_a_workers_credentials_cannot_inject_an_event(tmp_path: Path, secured: tuple[NatsServer, str]) -> None:
    server, _ = secured
    src = make_src(tmp_path, 1)
    url = server.stream_url()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NATS_USER", "publisher")
        mp.setenv("NATS_PASSWORD", PUB_PW)
        scan_and_publish(tmp_path, src, url)
    assert stream_state_as(server, user="publisher", password=PUB_PW) == 2
    event = b'{"v":1,"id":"x","kind":"created","source":"s","root":"/srv","path":"/srv/x"}'
    refused = publish_raw(server, "FC.p.0", event, {}, user="worker", password=WORK_PW)
    assert refused is not None
    assert publish_raw(server, "FC.p.0", event, {}, user="publisher", password=PUB_PW) is None  # the test can fail
    assert stream_state_as(server, user="publisher", password=PUB_PW) == 3  # the worker's never stored
    log = (tmp_path / "nats" / "nats-server.log").read_text()
    assert 'Publish Violation - User "worker", Subject "FC.p.0"' in log
    assert log.count("Violation") == 1, log  # fc-publish needed no right it lacks


def test_the_pipeline_works_with_these_permissions(
    tmp_path: Path, secured: tuple[NatsServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher logs in with NATS_USER/NATS_PASSWORD, the worker with an nkey seed file and the worker's
    rights; with leases and the shared fence (--partitions auto) too: those rights cover the key-value buckets."""
    server, seed = secured
    src = make_src(tmp_path, 12)
    dest = tmp_path / "dest"
    url = server.stream_url()
    monkeypatch.setenv("NATS_USER", "publisher")
    monkeypatch.setenv("NATS_PASSWORD", PUB_PW)
    scan_and_publish(tmp_path, src, url, "--partitions", "2")
    monkeypatch.delenv("NATS_USER")
    monkeypatch.delenv("NATS_PASSWORD")
    (tmp_path / "worker.nk").write_text(seed + "\n")
    (tmp_path / "worker.nk").chmod(0o600)
    auth = ("--nkey", str(tmp_path / "worker.nk"))
    finish(start_workers(tmp_path, src, dest, url, *auth, "--partitions", "auto", "--lease", "1", idle=1.5), tmp_path)
    assert tree(dest) == tree(src)
    assert stream_state_as(server, user="publisher", password=PUB_PW) == 0  # every message acknowledged
    log = (tmp_path / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log, log


def stream_state_as(server: NatsServer, **login: str) -> int:
    """How many messages stream FC holds, asked with this login."""
    import asyncio

    async def look() -> int:
        import nats

        nc = await nats.connect(server.url, **login)
        try:
            return (await nc.jetstream().stream_info("FC")).state.messages
        finally:
            await nc.close()

    return asyncio.run(look())


@pytest.mark.parametrize("command", ["fc-publish", "fc-consume"])
def test_wrong_credentials_are_a_configuration_error(
    tmp_path: Path, secured: tuple[NatsServer, str], command: str
) -> None:
    """nats-py tries a refused login again for ever: fc-publish said 'not reachable yet' and waited (exit 0 on
    an empty input, for ever on events), fc-consume waited in silence.  Now: exit 3, the password not shown."""
    server, _ = secured
    env = {**os.environ, "NATS_USER": "publisher", "NATS_PASSWORD": "not-the-Pw-42"}
    res = subprocess.run(
        fc(command, "--state", str(tmp_path / "s.db"), server.stream_url()),
        input=b"",
        capture_output=True,
        timeout=60,
        env=env,
    )
    err = res.stderr.decode()
    assert res.returncode == 3, err
    assert "refused the login (user publisher (NATS_PASSWORD))" in err
    assert "not-the-Pw-42" not in err


def test_a_credentials_file_logs_in(tmp_path: Path) -> None:
    """--creds: a user JWT and its seed (operator mode), read by nats-py; a file others may read is refused."""
    config, creds = operator_mode()
    server = start_nats(tmp_path / "nats", config)
    try:
        (tmp_path / "fc.creds").write_text(creds)
        (tmp_path / "fc.creds").chmod(0o600)
        auth = ("--creds", str(tmp_path / "fc.creds"))
        scan_and_publish(tmp_path, make_src(tmp_path, 5), server.stream_url(), *auth)
        assert stream_state_as(server, user_credentials=auth[1]) == 6  # the stream made, the events stored
        (tmp_path / "fc.creds").chmod(0o644)
        res = subprocess.run(fc("fc-consume", *auth, server.stream_url()), capture_output=True, timeout=60)
        assert res.returncode == 3 and b"chmod 600" in res.stderr, res.stderr
        assert b"SEED" not in res.stderr
    finally:
        server.kill()
