"""A path's events handled by two workers in turn (its partition moved: a takeover, a lease given back, a worker
replaced): what one worker's stages learnt of the path must not be needed by the other's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.broker.test_broker import fc, publish, scan, spawn, tree
from tests.servers.nats import NatsServer


def worker(tmp: Path, name: str, src: Path, dest: Path, url: str) -> list[subprocess.Popen[bytes]]:
    """fc-consume | fc-process (spaces to underscores) | fc-transport file://dest | fc-record, every state file its
    own (a host of its own), the record shared (fc-transport reads it: a deletion removes only a name the record or
    its own state knows was uploaded); ends once the partitions are idle."""
    st = tmp / name
    st.mkdir()
    record = str(tmp / "record.db")
    consume = spawn(
        fc("fc-consume", "--idle-exit", "2", "--state", str(st / "consume.db"), url),
        stdout=subprocess.PIPE,
        stderr=(st / "err").open("ab"),
    )
    process = spawn(
        fc("fc-process", "--chain", "filename.SpacesToUnderscores", "--state", str(st / "process.db")),
        stdin=consume.stdout,
        stdout=subprocess.PIPE,
        stderr=(st / "err").open("ab"),
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
            record,
        ),
        stdin=process.stdout,
        stdout=subprocess.PIPE,
        stderr=(st / "err").open("ab"),
    )
    rec = spawn(
        fc("fc-record", "--state", str(st / "record-state.db"), "--db", record),
        stdin=transport.stdout,
        stdout=subprocess.DEVNULL,
        stderr=(st / "err").open("ab"),
    )
    for pipe in (consume.stdout, process.stdout, transport.stdout):
        assert pipe is not None
        pipe.close()
    for p in (consume, process, transport, rec):
        assert p.wait(60) == 0, (st / "err").read_text()
    return [consume, process, transport, rec]


def test_a_deletion_taken_by_another_worker_deletes_the_renamed_file(tmp_path: Path, nats_server: NatsServer) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(6):
        (src / f"page {i}.txt").write_text(f"page {i}\n")
    url = nats_server.stream_url()
    publish(tmp_path, url, scan(tmp_path, src), "--partitions", "2")
    worker(tmp_path, "one", src, dest, url)
    assert sorted(tree(dest)) == [f"page_{i}.txt".encode() for i in range(6)]
    for i in range(0, 6, 2):
        (src / f"page {i}.txt").unlink()
    publish(tmp_path, url, scan(tmp_path, src))
    worker(tmp_path, "two", src, dest, url)  # worker one is gone: two owns the partitions now
    # worker two's stages never saw these paths uploaded: the record names the renamed files, which go
    assert sorted(tree(dest)) == [f"page_{i}.txt".encode() for i in range(1, 6, 2)]
