"""CDN invalidations when a round's commit is rolled back and redone item by item (a stage's bug on one item:
delivery/quarantine.py): the paths reach the thread that sends them once the commit is in, each once, under the
id of its row.  They used to be handed over by record() at once: the redo handed them over again, so the queue
held every path of the round twice (and ids a rollback had undone).  Real fc-transport to cf:// on the moto
server of tests/servers/s3.py, whose CloudFront refuses the invalidations (a distribution it does not have), so
they stay queued and in the table, to compare; the only thing made up is the bug (raised after the record()
of an item with paths to invalidate, so the redo records it again)."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

from fileconveyor.delivery.runner import Done, Options, Runner
from fileconveyor.errors import Exit
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.stage import Note, TransportStage
from fileconveyor.stopping import Stopper
from tests.servers import s3 as s3srv
from tests.transport.conftest import FaultAfter

from .conftest import _unique, events_for

N = 30


def _purging(stage: TransportStage, outcome: Done) -> bool:
    return isinstance(outcome.payload, Note) and bool(outcome.payload.purge)


def test_a_redone_commit_queues_each_invalidation_once(s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    root, state = tmp_path / "site", tmp_path / "t.db"
    root.mkdir()
    rels = [f"f{i:02}.txt" for i in range(N)]
    for rel in rels:
        (root / rel).write_bytes(rel.encode())
    prefix = _unique()
    settings = {
        "profile": s3srv.PROFILE,
        "endpoint_url": s3_server.endpoint,
        "timeout": "10",
        "connections": "2",
        "distribution_id": "ENOSUCHDIST",  # refused: the paths stay queued
        "domain": "cdn.example.com",
        "invalidate_after": "3600",
    }
    spec = f"cf://{s3srv.BUCKET}/{prefix}?" + "&".join(f"{k}={v}" for k, v in settings.items())
    stage = FaultAfter(spec, _purging)
    err = io.StringIO()
    opts = Options(state_path=state, drain_timeout=1)
    status = Runner(
        stage, opts, io.BytesIO(events_for(root, rels)), io.BytesIO(), Reporter("fc-t", err, 1), Stopper()
    ).run()
    assert stage.raised, "no path to invalidate was recorded: the test proved nothing"
    assert status == Exit.RETRY, err.getvalue()  # the invalidations wait for the next run, in the table
    with contextlib.closing(sqlite3.connect(state)) as db:
        rows = sorted(i for (i,) in db.execute("SELECT id FROM invalidations"))
        paths = sorted(p for (p,) in db.execute("SELECT path FROM invalidations"))
    assert paths == [f"/{prefix}/{rel}" for rel in rels]  # one row per path changed
    assert stage.purger is not None
    (queued,) = stage.purger.servers.values()
    assert sorted(queued.paths) == paths
    # each row once, by its id (a failed request puts a batch's rows back together: compare them all)
    assert sorted(r for ids in queued.paths.values() for r in ids) == rows
