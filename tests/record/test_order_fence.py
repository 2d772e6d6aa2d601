"""fc-record's order fence against a forged ``order``: one line with order 2^63-1, written by any stage before
fc-record, made every later event of its file "older than recorded" for good (with the shared PostgreSQL record,
on every worker).  Now an order past this host's clock plus --order-skew is a bad line (reported with its line
number, skipped, acknowledged), and an order already recorded past that limit (by a version before the rule, or
by a hand in the file) is no fence: the next event of the file is applied.  The fence itself still holds: an
older event never overwrites a newer one, also when the newer one's order is a little ahead of this host's clock.

Real processes: fc-watch --scan-once, a third-party stage that stands for fc-consume | fc-transport (it sets
server, url and the broker's store time in microseconds as ``order``, and forges one line), a real fc-relay (a
durable stage with hops and acknowledgements), and a real fc-record, into SQLite or the real PostgreSQL server
the suite starts (tests/servers/postgres.py)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fileconveyor import events as E
from fileconveyor.records import open_reader
from tests.conftest import RELAY, ROOT
from tests.security.stage_runs import env
from tests.servers.postgres import PgServer

try:
    import psycopg
except ImportError:  # the pg_server fixture says so
    psycopg = None  # type: ignore[assignment]

# fc-consume | fc-transport as seen by fc-record: server, url (the file's content in it) and order (the time the
# broker stored it, microseconds) on every line; with "forge", after the first line the same event again with
# order 2^63-1 and another url, as any stage between fc-consume and fc-record can write
STAGE = r"""
import json, sys, time
forge = sys.argv[1] == "forge"
for line in sys.stdin.buffer:
    ev = json.loads(line)
    ev.pop("hop", None)
    content = open(ev["path"]).read().strip() if ev["kind"] != "deleted" else "gone"
    ev.update(server="cdn", remote=ev["rel"], url="http://cdn.example/" + ev["rel"] + "?" + content,
              transported="uploaded", order=time.time_ns() // 1000)
    sys.stdout.buffer.write(json.dumps(ev).encode() + b"\n")
    if forge:
        forge = False
        forged = dict(ev, id="f" * 32, url="http://evil.example/", order=9223372036854775807)
        sys.stdout.buffer.write(json.dumps(forged).encode() + b"\n")
    sys.stdout.buffer.flush()
"""


def _pipeline(d: Path, db: str, mode: str) -> tuple[int, str, list[dict]]:
    """fc-watch --scan-once | STAGE | fc-relay | fc-record: its exit status, stderr and output events."""
    py, e = sys.executable, env(d)
    watch = subprocess.Popen(
        [py, str(ROOT / "bin" / "fc-watch"), "--scan-once", "--state", str(d / "w.db"), f"site={d / 'src'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=e,
    )
    assert watch.stdout is not None
    stage = subprocess.Popen([py, "-c", STAGE, mode], stdin=watch.stdout, stdout=subprocess.PIPE, env=e)
    watch.stdout.close()
    assert stage.stdout is not None
    relay = subprocess.Popen(
        [py, str(RELAY), "--state", str(d / "relay.db"), "--drain-timeout", "5"],
        stdin=stage.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=e,
    )
    stage.stdout.close()
    assert relay.stdout is not None
    cmd = [py, str(ROOT / "bin" / "fc-record"), "--db", db, "--state", str(d / "r.db"), "--drain-timeout", "5"]
    record = subprocess.run(
        [*cmd, "--progress"],
        stdin=relay.stdout,
        capture_output=True,
        env=e,
        timeout=120,
    )
    relay.stdout.close()
    for p in (watch, stage, relay):
        assert p.wait(60) == 0, p.args
    return (
        record.returncode,
        record.stderr.decode(errors="replace"),
        [json.loads(x) for x in record.stdout.splitlines()],
    )


def _urls(db: str) -> list[str]:
    reader = open_reader(db)
    try:
        return [r[2] for r in reader.rows()]
    finally:
        reader.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return str(tmp_path / "rec.db")
    pg: PgServer = request.getfixturevalue("pg_server")  # the suite's real server, a database of this test's
    return pg.url(pg.new_database())


def _site(d: Path, content: str) -> None:
    (d / "src").mkdir(exist_ok=True)
    (d / "src" / "p.css").write_text(content + "\n")


def test_a_forged_order_is_a_bad_line_and_the_next_real_event_is_applied(tmp_path: Path, db: str) -> None:
    """Before: the forged line was applied (the row said evil.example) and every later real event of p.css was
    counted "older than recorded" (the row never said 'two')."""
    _site(tmp_path, "one")
    status, err, out = _pipeline(tmp_path, db, "forge")
    assert status == 1, err  # a bad line: 1
    assert "input line 2: order 9223372036854775807 lies " in err and "(skipped)" in err, err
    assert [ev["url"] for ev in out] == ["http://cdn.example/p.css?one"], err  # skipped: not passed on
    assert _urls(db) == ["http://cdn.example/p.css?one"]
    with sqlite3.connect(tmp_path / "relay.db") as conn:  # fc-relay's every line acknowledged, the forged one too
        (written,) = conn.execute("SELECT v FROM meta WHERE k = 'written'").fetchone()
        assert conn.execute("SELECT reader, seq FROM acks").fetchall() == [(str(tmp_path / "r.db"), written)]
    conn.close()
    assert written == 2
    # the file's next real event is applied
    (tmp_path / "src" / "p.css").write_text("two\n")
    status, err, out = _pipeline(tmp_path, db, "plain")
    assert status == 0 and "9223372036854775807" not in err and "older than recorded" not in err, err
    assert [ev["url"] for ev in out] == ["http://cdn.example/p.css?two"], err
    assert _urls(db) == ["http://cdn.example/p.css?two"]


def _poison(db: str, value: object) -> None:
    """What fc-record before the rule stored for a forged line (or a hand in the file): p.css's fence ``value``."""
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as conn:
            assert conn.execute("UPDATE record_order SET event_order = %s", (value,)).rowcount == 1
    else:
        with sqlite3.connect(db) as conn:
            assert conn.execute("UPDATE record_order SET event_order = ?", (value,)).rowcount == 1
        conn.close()


@pytest.mark.parametrize(
    ("backend", "value"),  # (PostgreSQL's bigint column holds integers alone)
    [("sqlite", E.MAX_INT), ("sqlite", "late"), ("sqlite", 1e300), ("postgresql", E.MAX_INT)],
    ids=["sqlite-max", "sqlite-text", "sqlite-real", "postgresql-max"],
)
def test_a_fence_recorded_in_the_future_heals(tmp_path: Path, db: str, value: object) -> None:
    """A record poisoned before this rule: the next real event is applied (before: "older than recorded", for
    good), and the fence is the real order again, which an older event does not pass."""
    _site(tmp_path, "one")
    assert _pipeline(tmp_path, db, "plain")[0] == 0
    _poison(db, value)
    (tmp_path / "src" / "p.css").write_text("two\n")
    status, err, _ = _pipeline(tmp_path, db, "plain")
    assert status == 0 and "older than recorded" not in err, err
    assert _urls(db) == ["http://cdn.example/p.css?two"]
    # healed to the real order: an older copy of the first event (a redelivery) changes nothing
    reader = open_reader(db)
    try:
        row = next(iter(reader.rows()))
    finally:
        reader.close()
    older = {"v": 1, "kind": "modified", "path": row[0], "server": "cdn", "url": "http://cdn.example/old",
             "transported": "uploaded", "order": time.time_ns() // 1000 - 3_600_000_000}  # fmt: skip
    res = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-record"), "--db", db, "--state", str(tmp_path / "r2.db"), "--progress"],
        input=E.encode(older),
        capture_output=True,
        env=env(tmp_path),
        timeout=120,
    )
    assert res.returncode == 0 and b"1 older than recorded" in res.stderr, res.stderr
    assert _urls(db) == ["http://cdn.example/p.css?two"]


def test_an_order_a_little_ahead_of_the_clock_still_fences(tmp_path: Path, db: str) -> None:
    """A broker clock 30 s ahead of this host (within --order-skew 60): its event is applied, and an older one
    after it changes nothing.  With --order-skew 10 the same line is a bad line."""
    _site(tmp_path, "one")
    path = str(tmp_path / "src" / "p.css")
    now = time.time_ns() // 1000
    ev = {"v": 1, "kind": "modified", "path": path, "server": "cdn", "transported": "uploaded"}
    ahead = {**ev, "url": "http://cdn.example/ahead", "order": now + 30_000_000}
    older = {**ev, "url": "http://cdn.example/older", "order": now}

    def record(*evs: dict, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable,
            str(ROOT / "bin" / "fc-record"),
            "--db",
            db,
            "--state",
            str(tmp_path / "r.db"),
            "--progress",
        ]
        data = b"".join(E.encode(e) for e in evs)
        return subprocess.run(cmd + list(args), input=data, capture_output=True, env=env(tmp_path), timeout=120)

    res = record(ahead, older)
    assert res.returncode == 0 and b"1 older than recorded" in res.stderr, res.stderr
    assert _urls(db) == ["http://cdn.example/ahead"]
    far = {**ev, "url": "http://cdn.example/far", "order": now + 40_000_000}
    res = record(far, args=("--order-skew", "10"))
    assert res.returncode == 1 and b"input line 1: order " in res.stderr, res.stderr
    assert _urls(db) == ["http://cdn.example/ahead"]


_RUNS = itertools.count()
LIMIT = 2_000_000_000_000_000  # a host's clock plus the skew, in microseconds (the year 2033)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stored=st.one_of(
        st.integers(0, E.MAX_INT),
        st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 0]),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.binary(max_size=5),
    ),
    order=st.one_of(st.integers(0, LIMIT), st.sampled_from([LIMIT - 1, LIMIT, 0])),
)
def test_the_sqlite_fence_refuses_only_an_older_event_below_a_trusted_order(
    tmp_path: Path, stored: object, order: int
) -> None:
    """Records.claim on a real SQLite record whose record_order holds any value (the file is not trusted): the
    event is refused exactly when the stored order is a number no later than the limit and larger than its own."""
    from fileconveyor.records import open_writer

    db = tmp_path / f"claim-{next(_RUNS)}.db"  # (one tmp_path for every example)
    rec = open_writer(str(db))
    try:
        with rec.item():
            assert rec.claim("/s/p.css", "cdn", 0, LIMIT)
        rec.commit()
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE record_order SET event_order = ?", (stored,))
        conn.close()
        with rec.item():
            applied = rec.claim("/s/p.css", "cdn", order, LIMIT)
        rec.commit()
    finally:
        rec.close()
    trusted = isinstance(stored, int | float) and stored <= LIMIT
    assert applied == (not (trusted and stored > order))
    with sqlite3.connect(db) as conn:
        (now,) = conn.execute("SELECT event_order FROM record_order").fetchone()
    conn.close()
    assert now == (order if applied else stored)
