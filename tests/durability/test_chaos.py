"""The short chaos runs of `make test`: stages over FIFOs killed with -9 (one, or all at once) while the source
tree changes, then convergence of every destination and the record database to exactly the source.  Two
topologies (tests/durability/chaos.py): the five stages of one rule, and fc-conveyor's processes for one source
fanned out by fc-tee to two rules (a branch reader restarted behind fc-tee lost files before b8d87e5, unseen by
the one-rule run).  `make chaos` runs both for as many rounds as asked (bench/chaos.py)."""

from __future__ import annotations

import gzip
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import require_tool
from tests.durability import chaos


def check(report: chaos.Report, rounds: int) -> None:
    print(report.summary())
    assert report.rounds == rounds and sum(report.kills.values()) >= rounds
    assert report.ok, (
        f"{report.summary()}\nlost {report.lost[:5]} extra {report.extra[:5]} "
        f"record {report.record_wrong[:5]}\n{report.stderr_tail}"
    )
    assert report.converge_seconds < 90


def test_short_chaos_run_converges_exactly(tmp_path: Path) -> None:
    require_tool("bash")
    report = chaos.run(tmp_path, rounds=8, files=100, seed=11, converge_timeout=90)
    check(report, 8)


def test_short_chaos_run_of_the_conveyor_topology_converges_exactly_on_both_rules(tmp_path: Path) -> None:
    """fc-watch -> fc-tee -> (fc-filter | fc-process | fc-transport | fc-record) and (fc-transport | fc-record),
    as fc-conveyor runs them; round 3 kills every stage (fc-tee and fc-watch with both branches), the others
    one stage at random."""
    require_tool("gzip")
    report = chaos.run(
        tmp_path, rounds=8, files=100, seed=12, converge_timeout=90, topology="conveyor", kill_all_in=frozenset({3})
    )
    check(report, 8)
    assert len(report.kills) == 8 and {"site-watch", "site-tee"} < set(report.kills), report.kills
    css, every = report.branches["css"], report.branches["all"]
    assert 0 < css.files < every.files, "the css rule takes some of the files, the 'all' rule every one"


@pytest.mark.parametrize(
    ("damage", "seen_as"),
    [
        ("lost", "lost"),
        ("stale", "lost"),
        ("not processed", "lost"),
        ("extra", "extra"),
        ("dangling symlink", "extra"),
        ("unrecorded", "record_wrong"),
        ("recorded, not there", "record_wrong"),
    ],
)
def test_the_conveyor_checks_see_each_kind_of_damage(tmp_path: Path, damage: str, seen_as: str) -> None:
    """The convergence check itself, on the css rule: a destination and record database as they should be (built
    here, no stage run) pass, and each kind of damage is reported as what it is (a check that passes everything
    would make every chaos run look green)."""
    pipe = chaos.Conveyor(tmp_path)  # the config, its paths and rules; nothing started
    css = pipe.branches[0]
    for rel in ("d0/a b.css", "d0/skip/c.css", "d1/d.txt", "d1/e f.CSS", "d1/.g.css.part"):
        (pipe.src / rel).parent.mkdir(parents=True, exist_ok=True)
        (pipe.src / rel).write_bytes(os.urandom(50))
    want = chaos.expected_tree(pipe.src, css.takes, css.name)
    assert sorted(want) == ["d0/a_b.css", "d1/e_f.CSS"]
    conn = sqlite3.connect(pipe.db)
    with conn:
        conn.execute("CREATE TABLE synced_files (input_file TEXT, url TEXT)")
        for name, data in want.items():
            (css.dest / name).parent.mkdir(parents=True, exist_ok=True)
            (css.dest / name).write_bytes(gzip.compress(data))
            conn.execute("INSERT INTO synced_files VALUES (?, ?)", (name, css.url + quote(name)))
        conn.execute("INSERT INTO synced_files VALUES (?, ?)", ("other rule", pipe.branches[1].url + "d0/x.css"))
    conn.close()
    assert chaos.check_branch(css, want, pipe.db)[0] == chaos.BranchResult(len(want))
    name = sorted(want)[0]
    target = css.dest / name
    gone = target.with_name("gone.css")
    if damage == "lost":
        target.unlink()
    elif damage == "stale":
        target.write_bytes(gzip.compress(want[name] + b"older"))
    elif damage == "not processed":
        target.write_bytes(want[name])  # the source's bytes, not gzip's
    elif damage == "extra":
        gone.write_bytes(gzip.compress(b"x"))
    elif damage == "dangling symlink":
        os.symlink(tmp_path / "nowhere", gone)
    else:
        conn = sqlite3.connect(pipe.db)
        with conn:
            if damage == "unrecorded":
                conn.execute("DELETE FROM synced_files WHERE url = ?", (css.url + quote(name),))
            else:
                conn.execute("INSERT INTO synced_files VALUES (?, ?)", ("gone", css.url + "d0/gone.css"))
        conn.close()
    res = chaos.check_branch(css, want, pipe.db)[0]
    flagged = {kind: getattr(res, kind) for kind in ("lost", "extra", "record_wrong") if getattr(res, kind)}
    assert list(flagged) == [seen_as], flagged
