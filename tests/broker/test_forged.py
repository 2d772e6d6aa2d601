"""Anyone who can publish to the stream writes events: forged messages against a real nats-server must not
poison what comes after them (fc-record's order fence), must be reported with their stream sequence, and must
not land where no partition reads them; a broker password never shows in another process's messages."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery import nats_hop as N
from tests.broker.test_broker import fc, make_src, scan_and_publish
from tests.servers.nats import NatsServer


def publish_raw(server: NatsServer, subject: str, data: bytes) -> str | None:
    """Publish as an attacker would (no fc-publish): None when the server stored it, else the error."""

    async def go() -> str | None:
        import nats

        nc = await nats.connect(server.url)
        try:
            await nc.jetstream().publish(subject, data, timeout=2)
            return None
        except Exception as exc:
            return type(exc).__name__
        finally:
            await nc.close()

    return asyncio.run(go())


def event(path: str, kind: str, **extra: object) -> bytes:
    return json.dumps(
        {"v": 1, "id": f"x-{kind}", "kind": kind, "source": "s", "root": "/srv", "path": path, **extra}
    ).encode()


def consume_into_record(tmp: Path, url: str) -> tuple[int, str]:
    consume = subprocess.Popen(
        fc("fc-consume", "--idle-exit", "2", "--state", str(tmp / "consume.db"), url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # fc-record's lines into /dev/null, not a pipe read by this test (no File Conveyor stage): it is the end of the
    # chain at once, instead of after delivery/through.QUICK_READER_WAIT (5 s) of nobody registering as its reader
    record = subprocess.run(
        fc("fc-record", "--state", str(tmp / "record.db"), "--db", str(tmp / "synced.db")),
        stdin=consume.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    assert consume.stdout is not None and consume.stderr is not None
    consume.stdout.close()
    err = consume.stderr.read().decode()
    assert consume.wait(30) == 0, err
    return record.returncode, err + record.stderr.decode()


def test_a_forged_order_does_not_freeze_a_path_in_the_record(tmp_path: Path, nats_server: NatsServer) -> None:
    """fc-record applies an event only if its ``order`` is the largest seen for the path: a forged message with
    order 2**63-1 would make every later (real) event of that path 'older than recorded' for ever."""
    src = make_src(tmp_path, 1)
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, src, url)  # fc-publish makes the stream
    path = "/srv/www/logo.png"
    subj = N.subject("FC", N.partition_of(path.encode(), N.DEFAULT_PARTITIONS))
    forged = event(path, "created", server="cdn", url="http://evil.example/logo.png", order=E.MAX_INT)
    assert publish_raw(nats_server, subj, forged) is None
    time.sleep(0.01)
    real = event(path, "modified", server="cdn", url="http://cdn.example/logo.png")
    assert publish_raw(nats_server, subj, real) is None
    rc, err = consume_into_record(tmp_path, url)
    assert rc == 0, err
    with sqlite3.connect(tmp_path / "synced.db") as db:
        rows = db.execute("SELECT url FROM synced_files WHERE input_file=?", (path,)).fetchall()
    assert rows == [("http://cdn.example/logo.png",)], err


def test_a_bad_message_is_reported_with_its_stream_sequence(tmp_path: Path, nats_server: NatsServer) -> None:
    src = make_src(tmp_path, 1)
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, src, url)
    assert publish_raw(nats_server, "FC.p.0", b"not json") is None
    assert publish_raw(nats_server, "FC.p.0", b'{"v":1,"kind":"created","path":"\xff"}') is None
    _, err = consume_into_record(tmp_path, url)
    bad = [line for line in err.splitlines() if "not an event" in line]
    assert len(bad) == 2, err
    # the stream holds the scan's events first, then the two forged ones: their sequences are the last two
    seqs = sorted(int(line.split("stream seq ")[1].split()[0].rstrip(":)")) for line in bad)
    assert seqs[1] == seqs[0] + 1 and seqs[0] > 1, bad


def test_a_message_that_is_no_file_event_is_reported_and_terminated(tmp_path: Path, nats_server: NatsServer) -> None:
    """A pass-through's lines to its reader (events.RESEND, events.DROPPED) carry no file: published, each was
    taken as a line that made no item, its message held in progress for ever, and fc-consume --idle-exit waited
    for it for good."""
    src = make_src(tmp_path, 1)
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, src, url)
    assert publish_raw(nats_server, "FC.p.0", b'{"v":1,"kind":"resend"}') is None
    dropped = b'{"v":1,"kind":"dropped","hop":{"from":"/nowhere.db","epoch":"e","seq":3}}'
    assert publish_raw(nats_server, "FC.p.0", dropped) is None
    _, err = consume_into_record(tmp_path, url)
    bad = [line for line in err.splitlines() if "not an event" in line]
    assert len(bad) == 2 and "'resend' line is no file event" in bad[0], err


def test_no_message_lands_where_no_partition_reads_it(tmp_path: Path, nats_server: NatsServer) -> None:
    """The stream takes only the subjects of its partitions: FC.p.99 (8 partitions) or FC.p.x would be kept for
    ever, read by nobody (a work-queue stream), and never reported."""
    src = make_src(tmp_path, 1)
    scan_and_publish(tmp_path, src, nats_server.stream_url())
    assert publish_raw(nats_server, "FC.p.7", event("/srv/a", "created")) is None
    assert publish_raw(nats_server, "FC.p.99", event("/srv/a", "created")) is not None
    assert publish_raw(nats_server, "FC.p.x", event("/srv/a", "created")) is not None


def test_a_broker_password_is_not_shown_when_the_state_file_is_busy(tmp_path: Path, nats_server: NatsServer) -> None:
    url = f"nats://fc:s3cr3t-pw@127.0.0.1:{nats_server.port}/FC"
    state = str(tmp_path / "consume.db")
    first = subprocess.Popen(fc("fc-consume", "--state", state, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not Path(state + ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        second = subprocess.run(fc("fc-consume", "--state", state, url), capture_output=True, timeout=30)
        err = second.stderr.decode()
        assert second.returncode != 0 and "in use" in err, err
        assert "s3cr3t" not in err
        assert "fc@127.0.0.1" in err  # the holder is still named, with its user
        assert "password or token is in the URL" in err and "NATS_PASSWORD" in err  # where it belongs, said
    finally:
        first.terminate()
        first.communicate(timeout=30)
