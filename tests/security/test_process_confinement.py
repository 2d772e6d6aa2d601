"""fc-process writes only inside its work directory, whatever an incoming event says (issue 16, finding 2).

An event's ``name`` is joined to a work directory: an absolute name or one with ``/`` or ``..`` would put the
file anywhere the user can write.  Incoming names get the check processors' names get; such a line is a bad
line (reported with its number, skipped), and the good lines around it go on.  A forged ``file`` (the work
file of an earlier fc-process) is read, never moved or deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fileconveyor import events as E
from tests.process.conftest import event, outputs, run, work_root

HOSTILE_NAMES = [
    "{outside}/owned.txt",  # absolute: os.path.join drops the work directory
    "../../../owned.txt",
    "x/../../owned.txt",
    "..",
    ".",
    "",
]


def _hostile(tmp: Path, name: str, forged: Path) -> dict:
    src = tmp / "src" / "page.txt"
    ev = event(src, name=name.format(outside=tmp / "outside"))
    E.put_path(ev, "file", os.fsencode(forged))
    return ev


@pytest.mark.parametrize("chain", ["minify.CSS", "spaces-to-underscores"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_an_incoming_name_never_leads_outside_the_work_directory(tmp_path: Path, name: str, chain: str) -> None:
    # minify.CSS applies to no .txt (the name is only passed on); spaces-to-underscores applies to every name
    (tmp_path / "src").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "src" / "page.txt").write_text("hello\n")
    (tmp_path / "src" / "good.txt").write_text("good\n")
    forged = tmp_path / "outside" / "forged.txt"
    forged.write_text("the attacker's content\n")
    before = sorted(p for p in tmp_path.rglob("*") if "work" not in p.parts and "process.db" not in p.name)
    good = event(tmp_path / "src" / "good.txt")
    res = run(tmp_path, ["--chain", chain], [_hostile(tmp_path, name, forged), good])
    assert res.status == 1, res.stderr  # a bad line
    assert "line 1" in res.stderr and "'name'" in res.stderr, res.stderr
    # the good line went on, and nothing appeared (or changed) outside the work directory
    assert [E.get_path(ev, "path") for ev in outputs(res)] == [os.fsencode(tmp_path / "src" / "good.txt")]
    after = sorted(p for p in tmp_path.rglob("*") if "work" not in p.parts and "process.db" not in p.name)
    assert after == before
    assert forged.read_text() == "the attacker's content\n"
    assert not (tmp_path / "owned.txt").exists() and not (tmp_path / "outside" / "owned.txt").exists()


def test_a_forged_file_outside_the_work_directory_is_never_read_moved_or_deleted(tmp_path: Path) -> None:
    # A "file" is taken only from a *.work folder (lib/fileconveyor/sourcefile.py, issue 16 finding 1): one
    # elsewhere is refused with an error event, and stays where and what it was.
    (tmp_path / "src").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "src" / "a b.txt").write_text("source\n")
    forged = tmp_path / "outside" / "forged.txt"
    forged.write_text("kept\n")
    evs = []
    for name in ("a b.txt", "forged.txt"):  # renamed by the chain; not renamed (taken over as it is)
        ev = event(tmp_path / "src" / "a b.txt", name=name)
        E.put_path(ev, "file", os.fsencode(forged))
        evs.append(ev)
    res = run(tmp_path, ["--chain", "spaces-to-underscores"], evs)
    assert res.status == 1, res.stderr
    outs = outputs(res)
    assert len(outs) == 2 and all("not in a work directory" in out["error"] for out in outs)
    assert not [p for p in work_root(tmp_path).rglob("*") if p.is_file()]  # nothing of it copied in
    # a restart cleans the work directory up: the forged file stays where and what it was
    assert run(tmp_path, ["--chain", "spaces-to-underscores"], b"").status == 0
    assert forged.read_text() == "kept\n"
    assert sorted(os.listdir(tmp_path / "outside")) == ["forged.txt"]


def test_a_processor_name_and_an_incoming_name_get_the_same_check() -> None:
    from fileconveyor.processors.base import base_name_problem
    from fileconveyor.stages.process.stage import ProcessStage, Settings

    stage = ProcessStage([], Settings())
    for raw in (b"/etc/x", b"a/b", b"..", b".", b"", b"a\0b"):
        assert base_name_problem(raw)
        ev = json.loads(E.encode({"v": 1, "kind": "created", "path": "/s/a"}))
        E.put_path(ev, "name", raw)
        with pytest.raises(E.EventError, match="not a base name"):
            stage.split(ev)
    for ok in (b"a.css", b"..a", b"a..b", "é ü.png".encode(), b"\xff.bin"):
        assert base_name_problem(ok) is None


@pytest.mark.parametrize("name", [b"/abs/owned.txt", b"x/../../owned.txt", b"../owned.txt"])
def test_a_line_stored_before_the_check_still_writes_inside_the_work_directory(tmp_path: Path, name: bytes) -> None:
    # an inbox row written by an older version reaches the work unchecked: the final move is confined too
    from fileconveyor.stages.process.stage import _settle

    work = tmp_path / "work" / "e1"
    work.mkdir(parents=True)
    (work / "step-1-out.txt").write_text("processed\n")
    if name.startswith(b"/"):
        name = os.fsencode(tmp_path) + name
    final = _settle(os.fsencode(work), os.fsencode(work / "step-1-out.txt"), name)
    assert os.path.dirname(final) == os.fsencode(work)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [os.fsdecode(os.path.basename(final))]
