"""Trust of the broker hop against a real nats-server: signed messages (a forged one, whatever its headers, is
reported with its partition and stream sequence, terminated, and never moves the per-path fence), and
credentials that never appear on a command line or in a message."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fileconveyor.delivery import nats_auth as A
from fileconveyor.delivery import nats_hop as N
from fileconveyor.errors import ConfigError, UsageError
from tests.broker.test_broker import finish, lines_of, scan_publish_record, start_workers, stream_state, tree
from tests.conftest import ROOT
from tests.servers.nats import NatsServer

KEY = "kW3n8Yw1c0m5tq4C1C0q5oRZ2yH0Qv6xq9l3G6b2c8E="


def key_file(tmp: Path, *keys: str) -> str:
    path = tmp / "broker.keys"
    path.write_text("# fc-publish signs with the first\n" + "".join(k + "\n" for k in keys))
    path.chmod(0o600)
    return str(path)


def publish_raw(server: NatsServer, subject: str, data: bytes, headers: dict[str, str], **auth: str) -> str | None:
    """Publish as another client with publish rights would: None when the server stored it, else the error."""

    async def go() -> str | None:
        import nats

        nc = await nats.connect(server.url, **auth)
        try:
            await nc.jetstream().publish(subject, data, timeout=2, headers=headers)
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await nc.close()

    return asyncio.run(go())


def _one_signed_event(
    tmp_path: Path, nats_server: NatsServer
) -> tuple[Path, Path, str, tuple[str, str], dict, int, bytes]:
    """p.css ("one") published signed: (source, destination, stream URL, the key flag, the published event, its
    partition, and a forged copy of it with another id)."""
    src = tmp_path / "src"
    src.mkdir()
    url = nats_server.stream_url()
    keys = ("--key-file", key_file(tmp_path, KEY))
    (src / "p.css").write_text("one\n")
    scan_publish_record(tmp_path, src, url, *keys)
    real = lines_of(tmp_path / "published.jsonl")[0]
    k = N.partition_of(real["path"].encode(), N.DEFAULT_PARTITIONS)
    forged = json.dumps({**real, "id": "f" * 32, "kind": "modified"}).encode()
    return src, tmp_path / "dest", url, keys, real, k, forged


def test_a_forged_seq_never_moves_the_fence_of_a_signed_stream(tmp_path: Path, nats_server: NatsServer) -> None:
    """Unsigned, the fence trusts Fc-Epoch/Fc-Seq: a message with the publisher's epoch and seq 10**9 made the
    worker drop the path's next real event (the destination kept 'one', fc-consume said '2 stale dropped').
    Signed, the forged message (and one with a wrong signature) is reported with its partition and stream
    sequence, terminated, and the real event after it is applied."""
    src, dest, url, keys, real, k, forged = _one_signed_event(tmp_path, nats_server)
    order = {N.HEADER_EPOCH: real["hop"]["epoch"], N.HEADER_SEQ: str(10**9)}
    assert publish_raw(nats_server, N.subject("FC", k), forged, {N.HEADER_ID: "forged-1", **order}) is None
    wrong = {N.HEADER_ID: "forged-2", **order, "Fc-Sig": "0" * 12 + ":" + "ab" * 32}
    assert publish_raw(nats_server, N.subject("FC", k), forged, wrong) is None
    finish(start_workers(tmp_path, src, dest, url, *keys, idle=1), tmp_path)
    assert tree(dest) == {b"p.css": b"one\n"}
    # the path's next real event, for the same worker (its fence in its state file)
    (src / "p.css").write_text("two\n")
    scan_publish_record(tmp_path, src, url, *keys)
    finish(start_workers(tmp_path, src, dest, url, *keys, idle=1), tmp_path)
    err = (tmp_path / "consume.err").read_text()
    assert tree(dest) == {b"p.css": b"two\n"}, err
    assert f"partition {k}, stream seq 2: a message not signed (no Fc-Sig header): terminated" in err, err
    assert f"partition {k}, stream seq 3: a message signed with a key this worker does not have" in err, err
    assert "1 emitted, 0 awaiting the next stage, 0 stale dropped" in err  # the real one, not fenced
    assert stream_state(nats_server) == (0, 0)  # terminated: not kept, not redelivered


@pytest.mark.parametrize(
    "url", ["http://fc:hunter2@broker/FC", "nats://fc:hunter2@broker/F.C", "nats://fc:hun@ter2@broker:x/FC"]
)
def test_a_wrong_broker_url_is_said_without_its_password(url: str) -> None:
    """fc-publish and fc-consume said such a URL whole in their usage error (stderr, logs)."""
    with pytest.raises(UsageError) as caught:
        N.parse_url(url)
    assert "hunter2" not in str(caught.value) and "ter2" not in str(caught.value)
    assert "fc@broker" in str(caught.value)


def test_signatures_cover_subject_headers_and_payload() -> None:
    keys = A.Keys((b"k" * 32, b"old-key-" * 4))
    headers = {N.HEADER_ID: "id-1", N.HEADER_EPOCH: "e1", N.HEADER_SEQ: "7"}
    signed = {**headers, A.HEADER_SIG: keys.sign("FC.p.3", headers, b"{}")}
    assert keys.check("FC.p.3", signed, b"{}") is None
    assert keys.check("FC.p.4", signed, b"{}") == f"a wrong signature (key {keys.ids[0]})"  # another partition
    assert keys.check("FC.p.3", {**signed, N.HEADER_SEQ: "70"}, b"{}") is not None
    assert keys.check("FC.p.3", signed, b"{ }") is not None
    # rotation: a worker that has the old key too accepts what it signed
    old = A.Keys((b"old-key-" * 4,))
    by_old = {**headers, A.HEADER_SIG: old.sign("FC.p.3", headers, b"{}")}
    assert keys.check("FC.p.3", by_old, b"{}") is None
    assert "does not have" in (A.Keys((b"k" * 32,)).check("FC.p.3", by_old, b"{}") or "")


def test_keys_come_from_an_owner_only_file_or_the_environment(tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY, "second-key-0123456789")
    assert A.load_keys(path, env={}) == A.Keys((KEY.encode(), b"second-key-0123456789"))
    assert A.load_keys(None, env={A.KEYS_VAR: f"{KEY} second-key-0123456789"}) == A.load_keys(path, env={})
    assert A.load_keys(None, env={}) is None
    Path(path).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        A.load_keys(path, env={})
    with pytest.raises(ConfigError, match="fewer than 16"):
        A.load_keys(None, env={A.KEYS_VAR: "short"})
    assert KEY not in repr(A.load_keys(None, env={A.KEYS_VAR: KEY}))


def test_a_signature_with_non_ascii_text_is_a_wrong_one(tmp_path: Path, nats_server: NatsServer) -> None:
    """A client with publish rights put text other than hex after the key id in Fc-Sig ('0f..:é'):
    hmac.compare_digest refuses to compare such strings (TypeError), which fc-consume took for a bug of its own
    at every delivery of the message.  It is a wrong signature: reported, terminated, the real event applied."""
    src, dest, url, keys, real, k, forged = _one_signed_event(tmp_path, nats_server)
    kid = A.key_id(KEY.encode())
    headers = {N.HEADER_ID: "forged-1", N.HEADER_EPOCH: real["hop"]["epoch"], N.HEADER_SEQ: "2", "Fc-Sig": kid + ":é"}
    assert publish_raw(nats_server, N.subject("FC", k), forged, headers) is None
    finish(start_workers(tmp_path, src, dest, url, *keys, idle=1), tmp_path)
    err = (tmp_path / "consume.err").read_text()
    assert tree(dest) == {b"p.css": b"one\n"}, err
    assert f"partition {k}, stream seq 2: a message a wrong signature (key {kid})" in err, err
    assert stream_state(nats_server) == (0, 0), err  # terminated: not kept, not redelivered


def test_a_failure_of_ours_while_pulling_ends_fc_consume_with_status_5(tmp_path: Path, nats_server: NatsServer) -> None:
    """A bug met while taking a message (here: the signature check made to raise, as the non-ASCII signature
    did) ended the partition's puller unseen: nothing of that partition applied, and fc-consume exited 0 at
    --idle-exit.  It now says so and exits 5; the message, not acknowledged, is delivered again next run."""
    _, _, url, keys, _, _, _ = _one_signed_event(tmp_path, nats_server)
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from fileconveyor.delivery import nats_auth; "
        "nats_auth.Keys.check = lambda *a: 1 / 0; from fileconveyor.cli.consume import main; sys.exit(main())"
    )
    state = str(tmp_path / "c.db")
    argv = [sys.executable, "-c", code, str(ROOT / "lib"), "--idle-exit", "1", "--state", state, *keys, url]
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 5, p.stderr.decode()
    assert b"unexpected failure while pulling: division by zero" in p.stderr, p.stderr
    assert stream_state(nats_server)[0] == 1  # kept: delivered again to the next run


def test_a_key_file_is_read_once_and_must_be_a_file_or_a_pipe(tmp_path: Path) -> None:
    """--key-file was opened once to check it and again to read it: a FIFO fed by `cat keys > fifo` lost its
    writer to the first open and fc-consume waited at start for ever.  It is opened once now; a device (here one
    as /dev/zero, owner-only) is refused instead of being read without end, as is a file too large for keys."""
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo, 0o600)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fileconveyor.delivery import nats_auth as A; "
        "print(A.load_keys(sys.argv[2], env={}).ids)"
    )
    loader = subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT / "lib"), str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with open(fifo, "w") as w:  # waits for the loader's open, as `cat keys > fifo` does
            w.write(KEY + "\n")
        out, err = loader.communicate(timeout=10)
    finally:
        loader.kill()
        loader.wait()
    assert loader.returncode == 0, err.decode()
    assert out.decode().strip() == repr([A.key_id(KEY.encode())])
    if os.geteuid() == 0:  # mknod needs root
        zero = tmp_path / "zero"
        os.mknod(zero, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        with pytest.raises(ConfigError, match="not a regular file or a pipe"):
            A.load_keys(str(zero), env={})
    big = tmp_path / "big.keys"
    big.write_bytes((KEY + "\n").encode() * 2000)
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="not a file of keys"):
        A.load_keys(str(big), env={})
