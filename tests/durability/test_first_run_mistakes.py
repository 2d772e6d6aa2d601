"""A mistake costs a retry, not the files (issue 17, finding 1).

From a fresh state, the first run pipes into a reader that fails before it reads (a typo in fc-transport's
flags, two unnamed file:// destinations), or into `head`: no File Conveyor stage has ever acknowledged, so what
fc-watch (or a stage after it) wrote into the pipe used to count as delivered, and the corrected run sent
nothing.  Now a line counts once its reader has read it from the pipe, and a reader that closes the pipe before
the end of the output took nothing of that run (lib/fileconveyor/delivery/pipe_tail.py)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT, require_tool, write_tree

BIN = ROOT / "bin"
FILES = {f"css/f{i}.css": f"a{{b:{i}}}\n" for i in range(6)} | {"js/app.js": "var a=1;\n", "x y.css": "b{}\n"}


def _cmd(name: str, *args: str) -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, str(BIN / name), *args])


def _site(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "site", FILES)


def _run(tmp_path: Path, *stages: str) -> subprocess.CompletedProcess[str]:
    watch = _cmd("fc-watch", "--scan-once", "--state", str(tmp_path / "w.db"), str(tmp_path / "site"))
    return subprocess.run(
        ["bash", "-c", "set -o pipefail; " + " | ".join([watch, *stages])],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _transport(tmp_path: Path, *dests: str) -> str:
    return _cmd("fc-transport", "--state", str(tmp_path / "t.db"), *(a for d in dests for a in ("--to", d)))


def _filter(tmp_path: Path) -> str:
    return _cmd("fc-filter", "--state", str(tmp_path / "f.db"), "--extensions", "css:js")


def _sent(cdn: Path) -> set[str]:
    return {str(p.relative_to(cdn)) for p in cdn.rglob("*") if p.is_file()} if cdn.exists() else set()


MISTAKES = {
    "typo": lambda tmp: _transport(tmp, f"htp://{tmp}/cdn"),  # a usage error: exits 2 before it reads
    "two unnamed destinations": lambda tmp: _transport(tmp, f"file://{tmp}/cdn", f"file://{tmp}/cdn2"),
    "head": lambda tmp: "head -n 3",
}


def _relay(tmp_path: Path) -> str:
    """A stage with a state file in the middle (tests/relay.py: fc-filter's conditions in the durable runner)."""
    return " ".join(shlex.quote(a) for a in [sys.executable, str(RELAY), "--state", str(tmp_path / "r.db")])


# fc-filter passes lines through (no state file): behind it, fc-watch does not count what fc-filter read as
# delivered (delivery/pipe_tail.py: behind_pass_through); before, `fc-watch | fc-filter | fc-transport --typo`
# lost the run's lines now and then (fc-filter had read them all).  A stage with a state file in the middle
# (fc-relay) re-sends what its own reader did not take.
CASES = [(m, middle) for m in MISTAKES for middle in ("", "relay", "filter")]


@pytest.mark.parametrize(("mistake", "middle"), CASES, ids=[f"{m}-watch{'-' + x if x else ''}" for m, x in CASES])
def test_a_failed_first_run_leaves_everything_for_the_corrected_one(tmp_path: Path, mistake: str, middle: str) -> None:
    _site(tmp_path)
    cdn = tmp_path / "cdn"
    stages = {"": [], "relay": [_relay(tmp_path)], "filter": [_filter(tmp_path)]}[middle]
    wrong = _run(tmp_path, *stages, MISTAKES[mistake](tmp_path))
    if (mistake, middle) != ("head", "filter"):  # fc-filter wrote all into head's pipe and ended: nothing fails
        assert wrong.returncode != 0, wrong.stderr  # pipefail: the mistake shows
    assert "Traceback" not in wrong.stderr
    right = _run(tmp_path, *stages, _transport(tmp_path, f"file://{cdn}"))
    assert right.returncode == 0, right.stderr
    assert _sent(cdn) == set(FILES), "the corrected run must deliver every file"
    assert "crash" not in right.stderr  # a re-send after a reader that stopped is routine (issue 17, item 12)
    again = _run(tmp_path, *stages, _transport(tmp_path, f"file://{cdn}"))
    assert again.returncode == 0 and again.stdout == "", "delivered once: the third run sends nothing"


def test_a_reader_that_reads_everything_took_it(tmp_path: Path) -> None:
    """The documented meaning of a reader that is not a File Conveyor stage (jq, cat, a terminal): what it read
    from the pipe is delivered, so `fc-watch --scan-once | jq` shows what changed since the last run."""
    _site(tmp_path)
    first = _run(tmp_path, f"cat > {shlex.quote(str(tmp_path / 'seen.jsonl'))}")
    assert first.returncode == 0, first.stderr
    assert len((tmp_path / "seen.jsonl").read_text().splitlines()) == len(FILES)
    (tmp_path / "site" / "new.css").write_text("n{}\n")
    second = _run(tmp_path, "cat")
    assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines()] and all("new.css" in x for x in second.stdout.splitlines())


def test_fc_filter_into_a_file_is_delivered(tmp_path: Path) -> None:
    """`fc-watch --scan-once | fc-filter > FILE`: what fc-filter read it wrote at once where written is delivered,
    so the next run sends nothing again (behind fc-filter writing into a pipe it would: pipe_tail.py)."""
    _site(tmp_path)
    out = tmp_path / "events.jsonl"
    first = _run(tmp_path, f"{_filter(tmp_path)} > {shlex.quote(str(out))}")
    assert first.returncode == 0, first.stderr
    assert len(out.read_text().splitlines()) == len(FILES)
    again = _run(tmp_path, f"{_filter(tmp_path)} > {shlex.quote(str(out))}")
    assert again.returncode == 0 and out.read_text() == "", "delivered once: the second run sends nothing"


@pytest.mark.parametrize("reader", ["cat", "jq -c ."])
def test_fc_filter_before_a_reader_of_yours_sends_only_what_changed(tmp_path: Path, reader: str) -> None:
    """`fc-watch --scan-once | fc-filter ... | jq` in cron: nobody after fc-filter acknowledges, so fc-filter keeps
    its lines as a durable stage and counts what its reader read as delivered (stages/filter/run.py:
    passes_through).  Passing through there, fc-watch could never tell, and each run sent every line again; the
    reader saw fc-filter's ``dropped`` lines too, which are for File Conveyor stages."""
    if reader.startswith("jq"):
        require_tool("jq")
    _site(tmp_path)
    first = _run(tmp_path, _filter(tmp_path), reader)
    assert first.returncode == 0, first.stderr
    kinds = [json.loads(x)["kind"] for x in first.stdout.splitlines()]
    assert len(kinds) == len(FILES) and "dropped" not in kinds  # (every file of the site is css or js)
    (tmp_path / "site" / "new.css").write_text("n{}\n")
    (tmp_path / "site" / "skip.txt").write_text("dropped by the filter\n")
    second = _run(tmp_path, _filter(tmp_path), reader)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["rel"] == "new.css", lines
    third = _run(tmp_path, _filter(tmp_path), reader)
    assert third.returncode == 0 and third.stdout == "", third.stdout


# a wrapper that stays (as /usr/bin/time does): it and the stage it runs both have the pipe as stdin
WRAPPER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


@pytest.mark.parametrize("wrapped", [False, True], ids=["stage", "stage-under-a-wrapper"])
def test_fc_filter_before_a_stage_passes_through(tmp_path: Path, wrapped: bool) -> None:
    """In front of a File Conveyor stage, run by itself or under a wrapper such as time, fc-filter keeps no state
    file: the stage acknowledges straight to fc-watch (stages/filter/run.py: passes_through)."""
    _site(tmp_path)
    cdn = tmp_path / "cdn"
    transport = _transport(tmp_path, f"file://{cdn}")
    if wrapped:
        transport = " ".join([shlex.quote(sys.executable), "-c", shlex.quote(WRAPPER), transport])
    done = _run(tmp_path, _filter(tmp_path), transport)
    assert done.returncode == 0, done.stderr
    assert _sent(cdn) == set(FILES)
    assert not (tmp_path / "f.db").exists(), "fc-filter ran as a durable stage"
    again = _run(tmp_path, _filter(tmp_path), transport)
    assert again.returncode == 0 and again.stdout == "" and not (tmp_path / "f.db").exists()
