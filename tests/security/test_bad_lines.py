"""Finding 3 of issue 16: one bad line wedged the pipeline.  Each kind of line that made a stage exit 5 (and,
once committed, exit 5 again on every restart), or got stored and passed on although no stage could use it, is
now reported with its line number and skipped, by every event-reading stage, run for real on its stdin."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.stage_runs import BIN, JUDGES, RUNNER_STAGES, STAGES, Stage, env, integrity

BASE = '{"v":1,"kind":"created","root":"/r","path":"/r/x.txt","rel":"x.txt"'
# (what it is, the line): every one of them is refused by every stage that reads events
BAD_LINES = [
    ("lone surrogate in rel", BASE[: -len('"x.txt"')] + '"\\ud800"}'),
    ("lone surrogate in name", BASE + ',"name":"a\\udfff.txt"}'),
    ("lone surrogate in a key", BASE + ',"\\udc80":1}'),
    ("lone surrogate in hop.from", BASE + ',"hop":{"from":"/s\\ud800","epoch":"e","seq":1}}'),
    ("lone surrogate deep inside", BASE + ',"extra":{"a":["b","\\uDBFF"]}}'),
    ("deep nesting", BASE + ',"extra":' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("nesting past the limit", BASE + ',"extra":' + "[" * 40 + "]" * 40 + "}"),
    ("hop.seq of 2**63", BASE + ',"hop":{"from":"/nowhere.db","epoch":"e","seq":9223372036854775808}}'),
    ("size of 2**64", BASE + ',"size":18446744073709551616}'),
    ("negative size", BASE + ',"size":-1}'),
    ("size as a string", BASE + ',"size":"12"}'),
    ("ino as a float", BASE + ',"ino":1.5}'),
    ("mtime_ns of non-ASCII digits", BASE + ',"mtime_ns":"\\u00b2"}'),
    ("mtime of 1e400", BASE + ',"mtime":1e400}'),
    ("NaN", BASE + ',"mtime":NaN}'),
    ("v true", BASE.replace('"v":1', '"v":true') + "}"),
    ("v 1.0", BASE.replace('"v":1', '"v":1.0') + "}"),
    ("kind a list", BASE.replace('"created"', '["created"]') + "}"),
    ("path a list", BASE.replace('"/r/x.txt"', '["/r/x.txt"]') + "}"),
    ("rel a number", BASE.replace('"x.txt"', "7") + "}"),
    ("hop a string", BASE + ',"hop":"x"}'),
    ("hop.seq a string", BASE + ',"hop":{"from":"/nowhere.db","epoch":"e","seq":"1"}}'),
    ("hop.for not strings", BASE + ',"hop":{"from":"/nowhere.db","epoch":"e","seq":1,"for":[1]}}'),
    ("processed a string", BASE + ',"processed":"abc"}'),
    ("error a number", BASE + ',"error":5}'),
    # no file and no hop (events.RESEND): one with a hop crashed fc-record and a durable fc-filter (no path to key
    # it by), and a pass-through fc-filter passed it on
    ("resend with a hop", '{"v":1,"kind":"resend","hop":{"from":"/nowhere.db","epoch":"e","seq":1}}'),
]
BAD_BYTES = [("invalid UTF-8", BASE.encode()[:-7] + b'"x\xff.txt"}'), ("NUL", b'{"v":1\x00}')]


def _input(stage: Stage, d: Path) -> tuple[bytes, dict[int, str]]:
    """Good lines with every bad one between two of them; the bad lines' numbers."""
    lines, bad = [stage.good(d, 0)], {}
    for i, (what, line) in enumerate([(w, x.encode()) for w, x in BAD_LINES] + BAD_BYTES, 1):
        bad[len(lines) + 1] = what
        lines += [line + b"\n", stage.good(d, i)]
    return b"".join(lines), bad


@pytest.mark.parametrize("stage", JUDGES, ids=lambda s: s.name)
def test_every_bad_line_is_reported_by_number_and_skipped(stage: Stage, tmp_path: Path) -> None:
    data, bad = _input(stage, tmp_path)
    p = stage.run(tmp_path, data)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err[-3000:]  # some lines were bad: 1, never 5
    assert "Traceback" not in err
    for n, what in bad.items():
        assert f"input line {n}:" in err, f"{what} (line {n}) not reported:\n{err[-3000:]}"
    assert stage.good_seen(tmp_path, p.stdout) == {f"good {i}.txt" for i in range(len(bad) + 1)}
    assert all(json.loads(x).get("rel", "").startswith("good ") for x in p.stdout.splitlines())
    if not stage.stateful:  # fc-filter: passed through, nothing stored
        assert not stage.state(tmp_path).exists() and not (tmp_path / "state").exists()
        return
    assert integrity(stage.state(tmp_path)) == "ok"
    with sqlite3.connect(stage.state(tmp_path)) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)  # nothing bad stored
    again = stage.run(tmp_path, b"")
    assert again.returncode == 0, again.stderr.decode()[-2000:]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_line_longer_than_the_limit_is_skipped_unread(stage: Stage, tmp_path: Path) -> None:
    size = 30 << 20
    long = b'{"v":1,"kind":"created","path":"/r/x","junk":"' + b"a" * size + b'"}\n'
    data = stage.good(tmp_path, 0) + long + stage.good(tmp_path, 1)
    p, maxrss_kib = stage.run_measured(tmp_path, data)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err[-2000:]
    assert f"input line 2: {size + 48} bytes, longer than --max-line-bytes 1048576" in err
    assert stage.good_seen(tmp_path, p.stdout) == {"good 0.txt", "good 1.txt"}
    # the line was never held: the old reader took 7 times its size (a 100 MB line: 725 MB)
    assert maxrss_kib < 120_000, maxrss_kib


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_max_line_bytes_sets_the_limit(stage: Stage, tmp_path: Path) -> None:
    short = stage.good(tmp_path, 0)
    padded = json.loads(stage.good(tmp_path, 1))
    padded["padding"] = "p" * 400
    line = (json.dumps(padded) + "\n").encode()
    p = stage.run(tmp_path, short + line, "--max-line-bytes", str(len(short) + 10))
    assert p.returncode == 1, p.stderr.decode()[-2000:]
    assert b"input line 2: " in p.stderr and b"longer than --max-line-bytes" in p.stderr
    assert stage.good_seen(tmp_path, p.stdout) == {"good 0.txt"}


def test_fc_tee_passes_lines_through_byte_for_byte(tmp_path: Path) -> None:
    """fc-tee does not judge events (the stages after it do): only the length limit applies to it."""
    tee = STAGES[-1]
    data = b"".join(x.encode() + b"\n" for _, x in BAD_LINES) + b"".join(x + b"\n" for _, x in BAD_BYTES)
    p = tee.run(tmp_path, data)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert p.stdout == data


def test_a_stored_line_that_no_longer_decodes_is_set_aside_not_crashed_on(tmp_path: Path) -> None:
    """An inbox row an older version stored (a lone surrogate in rel): the restart that found it crashed with exit 5,
    and so did every restart after it.  Now the row goes to the quarantine table, once, with a message."""
    stage = RUNNER_STAGES[0]  # fc-relay: fc-filter's conditions in the durable runner
    assert stage.run(tmp_path, stage.good(tmp_path, 0)).returncode == 0
    old = BAD_LINES[0][1].replace("x.txt", "y.txt").encode() + b"\n"
    with sqlite3.connect(stage.state(tmp_path)) as db:
        db.execute("INSERT INTO inbox(line, lane, key) VALUES (?, '', ?)", (old, b"/r/x.txt"))
    p = stage.run(tmp_path, stage.good(tmp_path, 1))
    assert p.returncode == 1, p.stderr.decode()[-2000:]
    assert b"set aside" in p.stderr and b"surrogate" in p.stderr
    assert stage.good_seen(tmp_path, p.stdout) == {"good 1.txt"}
    with sqlite3.connect(stage.state(tmp_path)) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
        assert db.execute("SELECT line FROM quarantine").fetchall() == [(old,)]
    assert stage.run(tmp_path, b"").returncode == 0  # set aside once, not again on every start
    argv = [sys.executable, str(BIN / "fc-record"), "--status", "--state-file", str(stage.state(tmp_path))]
    status = subprocess.run(argv, capture_output=True, timeout=60, env=env(tmp_path))
    assert b"1 set aside (quarantine)" in status.stdout, status.stdout + status.stderr
    own = stage.run(tmp_path, b"", "--status")  # the stage's own --status, with the options it runs with
    assert own.returncode == 0 and b"1 set aside (quarantine)" in own.stdout, own.stdout + own.stderr


@pytest.mark.parametrize("stage", [s for s in RUNNER_STAGES if s.name != "fc-record"], ids=lambda s: s.name)
def test_status_finds_the_default_state_file(stage: Stage, tmp_path: Path) -> None:
    """--status with the options of a run and no --state reads the state file that run chose."""
    argv = [a for a in stage.argv(tmp_path) if a not in ("--state", str(stage.state(tmp_path)))]
    run = subprocess.run(argv, input=stage.good(tmp_path, 0), capture_output=True, timeout=60, env=env(tmp_path))
    assert run.returncode == 0, run.stderr
    p = subprocess.run([*argv, "--status"], capture_output=True, timeout=60, env=env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert str(tmp_path / "state").encode() in p.stdout and b"0 queued" in p.stdout
