"""fc-publish and fc-consume against a real nats-server (tests/servers/nats.py): events cross the broker
into fc-transport file://, and kills of fc-consume or of the server lose nothing and reorder no path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fileconveyor import events as E
from fileconveyor.delivery import nats_hop as N
from tests.conftest import ROOT
from tests.servers.nats import NatsServer

_started: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, killed at the end of the test if still running (a failed test leaves no worker behind)."""
    proc = subprocess.Popen(argv, **kwargs)
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fc(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bin" / name), *args]


def tree(d: Path) -> dict[bytes, bytes]:
    """Every file under ``d`` and its bytes.  Polled while fc-transport writes there: a file listed and gone
    before it is read (a temporary name renamed, a deletion) is left out, as a later look would not see it."""
    out = {}
    for dirpath, _, files in os.walk(os.fsencode(d)):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                out[os.path.relpath(p, os.fsencode(d))] = Path(os.fsdecode(p)).read_bytes()
            except FileNotFoundError:
                continue
    return out


def stream_state(server: NatsServer, stream: str = "FC") -> tuple[int, int]:
    """(messages kept in the stream, messages delivered and not acknowledged) on the server."""

    async def look() -> tuple[int, int]:
        import nats

        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            unacked = 0
            for k in range(N.MAX_PARTITIONS):
                try:
                    unacked += (await js.consumer_info(stream, N.consumer_name(stream, k))).num_ack_pending
                except Exception:
                    break
            return info.state.messages, unacked
        finally:
            await nc.close()

    return asyncio.run(look())


def unacknowledged(server: NatsServer, partitions: int, stream: str = "FC") -> list[str]:
    """What the stream holds that the consumer of its partition has not acknowledged: a consumer missing, one with
    messages not yet delivered or delivered and not acknowledged, and every message kept above its consumer's
    acknowledgement floor.  After a kill -9 of nats-server (2.9.10) the stream may keep messages its consumer had
    acknowledged: their removal was not on disk yet, and the consumer's floor is past them, so the server neither
    delivers them again nor removes them (7 of 453 once, all below the floor).  Those are not counted here:
    stream_state() == (0, 0) counted them, and failed the test now and then under load."""

    async def look() -> list[str]:
        import nats

        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            left, floor = [], {}
            for k in range(partitions):
                try:
                    info = await js.consumer_info(stream, N.consumer_name(stream, k))
                except Exception as exc:
                    left.append(f"partition {k}: no consumer ({exc or type(exc).__name__})")
                    continue
                if info.num_pending or info.num_ack_pending:
                    left.append(f"partition {k}: {info.num_pending} undelivered, {info.num_ack_pending} unacknowledged")
                floor[N.subject(stream, k)] = info.ack_floor.stream_seq if info.ack_floor else 0
            state = (await js.stream_info(stream)).state
            for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
                try:
                    msg = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue  # removed (acknowledged)
                if seq > floor.get(msg.subject, 0):
                    left.append(f"stream seq {seq} ({msg.subject}): above its consumer's acknowledgement floor")
            return left
        finally:
            await nc.close()

    return asyncio.run(look())


def scan_and_publish(tmp: Path, src: Path, url: str, *extra: str, timeout: float = 60) -> None:
    """fc-watch --scan-once piped into fc-publish (fc-publish acknowledges to fc-watch through the pipe)."""
    watch = spawn(
        fc("fc-watch", "--scan-once", "--state", str(tmp / "watch.db"), str(src)),
        stdout=subprocess.PIPE,
        stderr=(tmp / "watch.err").open("ab"),
    )
    pub = subprocess.run(
        fc("fc-publish", "--state", str(tmp / "publish.db"), *extra, url),
        stdin=watch.stdout,
        stderr=(tmp / "publish.err").open("ab"),
        timeout=timeout,
    )
    assert watch.stdout is not None
    watch.stdout.close()
    assert watch.wait(timeout) == 0, (tmp / "watch.err").read_text()
    assert pub.returncode == 0, (tmp / "publish.err").read_text()


def start_workers(
    tmp: Path, src: Path, dest: Path, url: str, *extra: str, idle: float = 3.0
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """fc-consume | fc-transport file://dest, with state files in tmp (the same ones each time)."""
    consume = spawn(
        fc("fc-consume", "-v", "--idle-exit", str(idle), "--state", str(tmp / "consume.db"), *extra, url),
        stdout=subprocess.PIPE,
        stderr=(tmp / "consume.err").open("ab"),
    )
    transport = spawn(
        fc(
            "fc-transport",
            "--state",
            str(tmp / "transport.db"),
            "--source",
            f"src={src}",
            "--to",
            f"file://{dest}",
        ),
        stdin=consume.stdout,
        stdout=(tmp / "transport.out").open("ab"),
        stderr=(tmp / "transport.err").open("ab"),
    )
    assert consume.stdout is not None
    consume.stdout.close()
    return consume, transport


def finish(procs: Sequence[subprocess.Popen[bytes]], tmp: Path, timeout: float = 60) -> None:
    for p in procs:
        assert p.wait(timeout) == 0, (tmp / "consume.err").read_text() + (tmp / "transport.err").read_text()


def lines_of(path: Path) -> list[dict]:
    """The whole lines of a file a stage may still be appending to (a last line without its newline is still
    being written: read while fc-record wrote it, it failed the test now and then as bad JSON)."""
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(x) for x in data[: data.rfind(b"\n") + 1].splitlines() if x.strip()]


def order_broken(published: list[dict], applied: list[dict]) -> list[bytes]:
    """Paths whose events fc-transport applied in an order other than the order fc-watch wrote them:
    an older event after a newer one (a repeat of the same event is allowed: at least once)."""
    rank = {}
    for i, ev in enumerate(published):
        rank[(E.get_path(ev, "path"), ev["id"])] = i
    last: dict[bytes, int] = {}
    broken = []
    for ev in applied:
        path = E.get_path(ev, "path")
        r = rank[(path, ev["id"])]
        if r < last.get(path, -1):
            broken.append(path)
        last[path] = max(r, last.get(path, -1))
    return broken


def written(state: Path) -> int:
    """The last line a stage's state file counts as written."""
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT v FROM meta WHERE k='written'").fetchone()[0])


def make_src(tmp: Path, n: int) -> Path:
    src = tmp / "src"
    (src / "sub dir").mkdir(parents=True)
    for i in range(n):
        (src / ("sub dir" if i % 3 == 0 else "") / f"f{i}.txt").write_text(f"file {i}\n")
    (src / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"not utf-8 name\n")  # exact bytes cross the broker
    return src


def scan(tmp: Path, src: Path) -> bytes:
    """One fc-watch --scan-once run (its state kept across runs); its lines are added to published.jsonl, the
    test's record of the order of events."""
    res = subprocess.run(
        fc("fc-watch", "--scan-once", "--state", str(tmp / "watch.db"), str(src)),
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    with (tmp / "published.jsonl").open("ab") as f:
        f.write(res.stdout)
    return res.stdout


def publish(tmp: Path, url: str, data: bytes, *extra: str, state: str = "publish.db") -> None:
    res = subprocess.run(
        fc("fc-publish", "--state", str(tmp / state), *extra, url), input=data, capture_output=True, timeout=60
    )
    assert res.returncode == 0, res.stderr


def scan_publish_record(tmp: Path, src: Path, url: str, *extra: str) -> None:
    publish(tmp, url, scan(tmp, src), *extra)


def churn(src: Path, rnd: int) -> None:
    """Round 2 and 3 of changes: several events per path in the stream (modified, deleted, created again)."""
    files = sorted(p for p in src.rglob("f*.txt"))
    for i, p in enumerate(files):
        if i % 4 == rnd % 4:
            p.unlink()
        elif i % 3 == 0:
            p.write_text(f"round {rnd} {p.name}\n" * (rnd + 1))
    for i in range(0, 60, 7):  # recreated after a deletion (or new)
        p = src / f"f{i}.txt"
        if not p.exists():
            p.write_text(f"again {rnd}\n")


# -- tests -----------------------------------------------------------------------------------


def test_events_cross_the_broker_into_file_transport(tmp_path: Path, nats_server: NatsServer) -> None:
    src = make_src(tmp_path, 40)
    dest = tmp_path / "dest"
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, src, url, "--partitions", "4")
    # an event from before the hop with an order of its own (anyone's): replaced by the broker's
    (src / "ghost.txt").write_text("ghost\n")
    ghost = {"v": 1, "id": "f" * 32, "kind": "created", "source": "src", "root": str(src), "order": 10**18}
    ghost.update(path=str(src / "ghost.txt"), rel="ghost.txt", size=6)
    publish(tmp_path, url, E.encode(ghost), state="ghost.db")
    assert stream_state(nats_server)[0] == 42  # stored, not consumed yet
    finish(start_workers(tmp_path, src, dest, url, idle=1.5), tmp_path)
    assert tree(dest) == tree(src)
    # each event carries the time the server stored it, for fc-record's fence between workers
    out = lines_of(tmp_path / "transport.out")
    assert len(out) == 42 and all(isinstance(ev["order"], int) and 1.7e15 < ev["order"] < 1e17 for ev in out)
    # acknowledged to the server once fc-transport acknowledged them: the work queue is empty
    assert stream_state(nats_server) == (0, 0)


def test_resent_lines_are_duplicates_the_server_drops(tmp_path: Path, nats_server: NatsServer) -> None:
    src = make_src(tmp_path, 30)
    out = subprocess.run(
        fc("fc-watch", "--scan-once", "--state", str(tmp_path / "w.db"), str(src)), capture_output=True, check=True
    ).stdout
    url = nats_server.stream_url()
    for run in (1, 2):  # the second as a publisher that lost its state: the server drops every line
        res = subprocess.run(
            fc("fc-publish", "--progress", "--state", str(tmp_path / f"p{run}.db"), url),
            input=out,
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert stream_state(nats_server)[0] == 31
    assert "31 dropped by the server as duplicates" in res.stderr.decode()


def test_message_ids_tell_a_resend_from_a_restored_file() -> None:
    line = b'{"v":1}\n'
    ev = {"id": "a" * 32, "hop": {"from": "/w.db", "epoch": "e1", "seq": 5}}
    assert N.message_id(ev, line) == N.message_id({**ev}, line)
    # deleted and restored with the same metadata: the same event id, a later line of fc-watch
    assert N.message_id(ev, line) != N.message_id({**ev, "hop": {**ev["hop"], "seq": 9}}, line)


def test_consumer_killed_mid_run_loses_nothing_and_keeps_each_path_in_order(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    src = make_src(tmp_path, 120)
    dest = tmp_path / "dest"
    url = nats_server.stream_url()
    data = scan(tmp_path, src)
    for rnd in (2, 3):
        churn(src, rnd)
        data += scan(tmp_path, src)
    publish(tmp_path, url, data, "--partitions", "4")
    published = lines_of(tmp_path / "published.jsonl")
    total = len(published)
    # --max-pending: the server hands out no more than that per partition before acknowledgements come back,
    # so the kill finds messages read, emitted and not acknowledged, and others not read yet
    workers = ("--ack-wait", "1", "--max-pending", "40")
    consume, transport = start_workers(tmp_path, src, dest, url, *workers, idle=2)
    out = tmp_path / "transport.out"
    deadline = time.monotonic() + 30
    # (an eighth: fc-transport emits nothing for most events of this churn, a file's earlier versions being gone
    # and a deletion of a file never uploaded deleting nothing, so its output lags what fc-consume emitted)
    while len(lines_of(out)) < total // 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    consume.send_signal(signal.SIGKILL)
    at_kill = len(lines_of(out))
    consume.wait()
    transport.wait(60)  # its input ended: it finishes what it has and acknowledges it
    assert at_kill < total, "the kill came after the end: the test proved nothing"
    emitted = written(tmp_path / "consume.db")
    assert emitted < total, "everything was emitted before the kill: the test proved nothing"
    finish(start_workers(tmp_path, src, dest, url, *workers, idle=2), tmp_path)
    assert written(tmp_path / "consume.db") > emitted
    assert tree(dest) == tree(src)
    assert order_broken(published, lines_of(out)) == []
    assert stream_state(nats_server) == (0, 0)


def test_a_stale_copy_later_in_the_stream_never_overtakes_the_newer_event(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """fc-watch's line for a deletion, published again after the server's duplicate window (a writer
    that lost its acknowledgement and replays): it comes after the path's newer creation in the stream.
    The fence drops it; without it the file would be deleted at the destination."""
    src = tmp_path / "src"
    src.mkdir()
    dest = tmp_path / "dest"
    url = nats_server.stream_url()
    (src / "p.css").write_text("one\n")
    scan_publish_record(tmp_path, src, url, "--duplicate-window", "1")
    (src / "p.css").unlink()
    scan_publish_record(tmp_path, src, url)
    deletion = (tmp_path / "published.jsonl").read_bytes().splitlines(keepends=True)[-1]
    assert json.loads(deletion)["kind"] == "deleted"
    (src / "p.css").write_text("two\n")
    scan_publish_record(tmp_path, src, url)
    time.sleep(1.5)  # past the duplicate window
    publish(tmp_path, url, deletion, state="again.db")
    assert stream_state(nats_server)[0] == 4  # created, deleted, created, deleted again
    finish(start_workers(tmp_path, src, dest, url, idle=1.5), tmp_path)
    assert tree(dest) == {b"p.css": b"two\n"}
    assert stream_state(nats_server) == (0, 0)  # the stale copy was acknowledged too


def test_nats_server_killed_and_restarted_loses_nothing(tmp_path: Path, nats_server: NatsServer) -> None:
    src = make_src(tmp_path, 300)
    dest = tmp_path / "dest"
    url = nats_server.stream_url()
    scan_publish_record(tmp_path, src, url, "--partitions", "4")
    # the server dies: fc-publish waits with the lines unacknowledged, and goes on once it is back
    nats_server.kill()
    churn(src, 2)
    watch = spawn(
        fc("fc-watch", "--scan-once", "--state", str(tmp_path / "watch.db"), str(src)),
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "watch.err").open("ab"),
    )
    pub = spawn(
        fc("fc-publish", "--timeout", "1", "--state", str(tmp_path / "publish.db"), url),
        stdin=watch.stdout,
        stderr=(tmp_path / "publish.err").open("ab"),
    )
    assert watch.stdout is not None
    watch.stdout.close()
    time.sleep(1.5)
    assert pub.poll() is None  # still waiting for the server
    nats_server.start()
    assert pub.wait(60) == 0, (tmp_path / "publish.err").read_text()
    assert watch.wait(60) == 0
    # and dies again while the workers consume
    consume, transport = start_workers(tmp_path, src, dest, url, "--ack-wait", "2", idle=4)
    out = tmp_path / "transport.out"
    deadline = time.monotonic() + 30
    while len(lines_of(out)) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    nats_server.kill()
    time.sleep(0.5)
    nats_server.start()
    finish((consume, transport), tmp_path)
    assert tree(dest) == tree(src)
    # every message acknowledged by its partition's consumer (the server may keep some of those: see unacknowledged)
    assert unacknowledged(nats_server, 4) == []


def test_a_slow_next_stage_is_waited_for_without_redeliveries(tmp_path: Path, nats_server: NatsServer) -> None:
    """Each file takes 0.4 s in fc-process (one at a time), the ack wait is 1 s: the messages wait far longer
    than that for the next stage, and fc-consume's in-progress acknowledgements keep the server from
    delivering any of them again."""
    src = make_src(tmp_path, 7)
    dest = tmp_path / "dest"
    url = nats_server.stream_url()
    scan_and_publish(tmp_path, src, url, "--partitions", "2")
    step = 'cmd:sh -c "sleep 0.4; cat \\"$1\\"" sh {in}'
    consume = spawn(
        fc("fc-consume", "-v", "--idle-exit", "1", "--ack-wait", "1", "--state", str(tmp_path / "c.db"), url),
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "consume.err").open("ab"),
    )
    process = spawn(
        fc("fc-process", "--jobs", "1", "--processor", step, "--state", str(tmp_path / "p.db")),
        stdin=consume.stdout,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "process.err").open("ab"),
    )
    transport = spawn(
        fc("fc-transport", "--state", str(tmp_path / "t.db"), "--to", f"file://{dest}"),
        stdin=process.stdout,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "transport.err").open("ab"),
    )
    assert consume.stdout is not None and process.stdout is not None
    consume.stdout.close()
    process.stdout.close()
    for p in (consume, process, transport):
        assert p.wait(60) == 0, (tmp_path / "consume.err").read_text() + (tmp_path / "process.err").read_text()
    assert tree(dest) == tree(src)
    err = (tmp_path / "consume.err").read_text()
    assert "8 emitted, " in err
    assert ", 0 delivered again by the server" in err  # 16 without the in-progress acknowledgements
    assert stream_state(nats_server) == (0, 0)
