"""A path's events handled by two workers in turn (its partition moved: a takeover, a lease given back, a worker
replaced): what one worker's stages learnt of the path must not be needed by the other's."""

from __future__ import annotations

from pathlib import Path

from tests.broker import test_worker_lost as lost
from tests.broker.test_broker import publish, scan, tree
from tests.servers.nats import NatsServer


def worker(tmp: Path, name: str, src: Path, dest: Path, url: str) -> None:
    """test_worker_lost's worker (fc-consume | fc-process, spaces to underscores | fc-transport file://dest
    --record-db | fc-record, its state files its own, the record shared), run until its partitions are idle."""
    stages = lost.worker(tmp, name, src, dest, tmp / "record.db", url, "--idle-exit", "2")
    for stage in ("consume", "process", "transport", "record"):
        assert stages[stage].wait(60) == 0, stages["err"].read_text()


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
