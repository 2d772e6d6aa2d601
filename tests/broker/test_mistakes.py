"""A careless user's mistakes with the broker, against a real nats-server: each is said, with an exit status that
tells a supervisor not to retry blindly, instead of a worker that waits for ever doing nothing."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

from fileconveyor.delivery import nats_hop as N
from tests.broker.test_broker import fc, make_src, scan_and_publish
from tests.servers.nats import NatsServer


def consume(tmp: Path, url: str, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        fc("fc-consume", "--idle-exit", "2", "--state", str(tmp / "consume.db"), *extra, url),
        capture_output=True,
        timeout=timeout,
    )


def pulling(server: NatsServer, consumer: str) -> bool:
    async def look() -> bool:
        import nats

        nc = await nats.connect(server.url)
        try:
            return (await nc.jetstream().consumer_info("FC", consumer)).num_waiting > 0
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(look())


def test_partitions_the_stream_does_not_have_are_a_configuration_error(tmp_path: Path, nats_server: NatsServer) -> None:
    """fc-consume --partitions 8-9 on a stream of 8 partitions (0 to 7): it pulled nothing and said nothing, for
    ever (the error was raised in a task of the event loop nobody looked at)."""
    scan_and_publish(tmp_path, make_src(tmp_path, 1), nats_server.stream_url())
    res = consume(tmp_path, nats_server.stream_url(), "--partitions", "6-9")
    assert res.returncode == 3, res.stderr
    assert b"the stream has 8 partitions" in res.stderr


def test_a_stream_not_made_by_file_conveyor_is_a_configuration_error(tmp_path: Path, nats_server: NatsServer) -> None:
    """A typo that names another application's stream: said, and exit 3 (it was exit 0, as if all was done)."""

    async def make() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        await nc.close()

    asyncio.run(make())
    res = consume(tmp_path, nats_server.stream_url("ORDERS"))
    assert res.returncode == 3, res.stderr
    assert b"not made by File Conveyor" in res.stderr


def test_a_second_worker_on_the_same_partitions_is_refused(tmp_path: Path, nats_server: NatsServer) -> None:
    """Two workers given the same partition share its consumer: the server hands each half the messages, so
    events of one path go to two workers (two fences) and are applied out of order.  The second one is refused
    (exit 3); the first goes on."""
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, make_src(tmp_path, 1), url)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = subprocess.Popen(
        fc("fc-consume", "-v", "--partitions", "0-3", "--state", str(tmp_path / "a" / "consume.db"), url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stderr is not None
        while b"consuming" not in first.stderr.readline():
            assert first.poll() is None
        deadline = time.monotonic() + 20
        while not pulling(nats_server, N.consumer_name("FC", 3)):  # its pull requests are on the server
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        res = consume(tmp_path / "b", url, "--partitions", "3-5")
        assert res.returncode == 3, res.stderr
        assert b"partition 3 is being consumed by another process" in res.stderr
        assert first.poll() is None  # the first one goes on
    finally:
        first.terminate()
        first.communicate(timeout=30)


def test_a_typo_in_the_stream_name_is_said(tmp_path: Path, nats_server: NatsServer) -> None:
    """fc-publish makes a missing stream: with a misspelt name, its events go where no worker reads (fc-watch has
    them acknowledged).  The other File Conveyor streams of the server are named, at both ends."""
    scan_and_publish(tmp_path, make_src(tmp_path, 1), nats_server.stream_url("FC"))
    pub = subprocess.run(
        fc("fc-publish", "--state", str(tmp_path / "p2.db"), nats_server.stream_url("FCC")),
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert pub.returncode == 0, pub.stderr
    assert b"made the stream (8 partitions); other File Conveyor streams on this server: FC\n" in pub.stderr
    worker = subprocess.Popen(
        fc("fc-consume", "--state", str(tmp_path / "c.db"), nats_server.stream_url("FCX")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert worker.stderr is not None
        line = worker.stderr.readline()
        assert b"does not exist yet" in line and b"other File Conveyor streams on this server: FC, FCC" in line
    finally:
        worker.terminate()
        worker.communicate(timeout=30)


def test_idle_exit_waiting_for_a_reader_that_never_acknowledges_is_said(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """fc-consume --idle-exit --output events.jsonl (to have a look): no File Conveyor stage reads the file, so
    nothing acknowledges the lines and the run waits for ever.  It did so saying nothing."""
    scan_and_publish(tmp_path, make_src(tmp_path, 1), nats_server.stream_url())
    out = tmp_path / "events.jsonl"
    worker = subprocess.Popen(
        fc("fc-consume", "--idle-exit", "1", "--state", str(tmp_path / "c.db"), "--output", str(out), nats_server.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    guard = threading.Timer(30, worker.terminate)  # the old code said nothing: readline() would wait for ever
    guard.start()
    try:
        assert worker.stderr is not None
        line = worker.stderr.readline()  # after ~6 s (the wait is max(--idle-exit, 5 s))
        assert b"not acknowledged by the next stage" in line, line
        assert out.stat().st_size > 0 and worker.poll() is None
    finally:
        guard.cancel()
        worker.terminate()
        worker.communicate(timeout=30)
