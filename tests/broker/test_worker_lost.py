"""A worker lost for good (every process of it killed, never restarted, its state files gone with its host):
what its later stages had not finished must come to another worker, since the broker still has it.

fc-consume acknowledges a message only once the line is *through* the worker's last File Conveyor stage
(delivery/through.py).  Before, it acknowledged once fc-process had the line: the dead worker's fc-transport had
uploaded and deleted files its fc-record never recorded, and nobody recorded them (issue 19, make scale-chaos:
"record wrong 18"); a stuck fc-transport's processed files were never uploaded at all."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.broker.test_broker import fc, publish, scan, spawn, stream_state, tree
from tests.broker.test_leases import wait_for
from tests.servers.nats import NatsServer

ACK_WAIT = "2"  # seconds: the dead worker's messages come to the other one this long after its last "in progress"


def worker(tmp: Path, name: str, src: Path, dest: Path, record: Path, url: str, *extra: str) -> dict:
    """fc-consume | fc-process | fc-transport file://dest | fc-record --db record, its state files its own (a host
    of its own), the record shared."""
    st = tmp / name
    st.mkdir()
    err = (st / "err").open("ab")
    consume = spawn(
        fc("fc-consume", "--ack-wait", ACK_WAIT, "--state", str(st / "consume.db"), *extra, url),
        stdout=subprocess.PIPE,
        stderr=err,
    )
    process = spawn(
        fc("fc-process", "--chain", "filename.SpacesToUnderscores", "--state", str(st / "process.db")),
        stdin=consume.stdout,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    transport = spawn(
        fc(
            "fc-transport",
            "--state",
            str(st / "transport.db"),
            "--source",
            f"src={src}",
            "--to",
            f"file://{dest}",
            "--record-db",
            str(record),
        ),  # a deletion of what a uploaded: b knows the name from the record only
        stdin=process.stdout,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    rec = spawn(
        fc("fc-record", "--state", str(st / "record.db"), "--db", str(record)),
        stdin=transport.stdout,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    for pipe in (consume.stdout, process.stdout, transport.stdout):
        assert pipe is not None
        pipe.close()
    return {"consume": consume, "process": process, "transport": transport, "record": rec, "err": st / "err"}


def recorded(record: Path) -> set[str]:
    if not record.exists():
        return set()
    with sqlite3.connect(record) as db:
        try:
            return {os.fsdecode(r[0]) for r in db.execute("SELECT input_file FROM synced_files")}
        except sqlite3.OperationalError:  # not made yet
            return set()


def acknowledged(state: Path) -> int:
    """The highest seq a reader has acknowledged to this stage's state file (0: none yet)."""
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM acks").fetchone()[0])


@pytest.mark.parametrize("stuck", ["record", "transport"])
def test_a_worker_lost_for_good_leaves_what_it_had_not_finished_to_another(
    tmp_path: Path, nats_server: NatsServer, stuck: str
) -> None:
    """``stuck``: the stage of worker a that stops: fc-record (files uploaded, not recorded) or fc-transport
    (files processed, not uploaded)."""
    src, dest, record = tmp_path / "src", tmp_path / "dest", tmp_path / "record.db"
    src.mkdir()
    for i in range(4):
        (src / f"old {i}.txt").write_text(f"old {i}\n")
    url = nats_server.stream_url()
    publish(tmp_path, url, scan(tmp_path, src), "--partitions", "2")
    a = worker(tmp_path, "a", src, dest, record, url)
    wait_for("worker a records the first files", lambda: len(recorded(record)) == 4)
    # through the whole chain, back to fc-consume: their messages acknowledged (the stream keeps none)
    wait_for("the first messages acknowledged", lambda: stream_state(nats_server) == (0, 0), every=0.25)

    # a stage of worker a stops (a slow database or destination, a stuck host); the rest of a goes on
    os.kill(a[stuck].pid, signal.SIGSTOP)
    for i in range(20):
        (src / f"new {i}.txt").write_text(f"new {i}\n")
    (src / "old 0.txt").unlink()
    (src / "old 1.txt").unlink()
    (src / "old 2.txt").write_text("old 2, changed\n")
    publish(tmp_path, url, scan(tmp_path, src))  # 23 events: 4 + 23 lines from a's fc-consume, seq 1 to 27
    want = {p.name.replace(" ", "_").encode(): p.read_bytes() for p in src.iterdir()}
    if stuck == "record":
        wait_for("worker a's fc-transport uploads and deletes", lambda: tree(dest) == want)
    # fc-process has taken all 27 lines: the old fc-consume acknowledged their messages to the server then
    wait_for("a's fc-process acknowledges every line", lambda: acknowledged(tmp_path / "a" / "consume.db") >= 27)
    # the 23 messages are not done: fc-record has not recorded them (given a moment to go, as they used to)
    try:
        wait_for("the old acknowledgements", lambda: stream_state(nats_server)[0] == 0, timeout=1.5, every=0.25)
    except AssertionError:
        pass
    kept = stream_state(nats_server)[0]

    # worker a's host is lost for good: every process of it killed, never started again
    for name in ("consume", "process", "transport", "record"):
        a[name].kill()
        a[name].wait()
    assert recorded(record) == {str(src / f"old {i}.txt") for i in range(4)}  # what a had recorded

    b = worker(tmp_path, "b", src, dest, record, url, "--idle-exit", "4")
    for name in ("consume", "process", "transport", "record"):
        assert b[name].wait(60) == 0, b["err"].read_text()
    assert tree(dest) == want
    assert recorded(record) == {str(p) for p in src.iterdir()}, f"{kept} message(s) were kept for b"
    assert stream_state(nats_server) == (0, 0)
    assert kept == 23  # held by the server while a's fc-record had not recorded them
