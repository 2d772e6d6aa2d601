"""What fc-process does per event of a chain that only renames (issue 18: the pipeline's per-line CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fileconveyor.delivery.stage import StageContext
from fileconveyor.processors import Context, Output, Processor
from fileconveyor.stages.process.stage import ProcessStage

from .conftest import event, outputs, run

OWN_TABLES = re.compile(r"\b(names|work_files|css_refs|css_events)\b")


def test_a_rename_only_chain_asks_no_empty_table_about_each_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record() updated the work copies, looked for stylesheets referencing the file and deleted its old name,
    three statements per event, in tables that held no row.  Tables empty at the start and not written since
    are asked nothing; a name that differs from the base name is still kept, and carried by a later deletion."""
    statements: list[str] = []
    real_start = ProcessStage.start

    def start(self: ProcessStage, ctx: StageContext) -> None:
        real_start(self, ctx)
        ctx.db.set_trace_callback(statements.append)

    monkeypatch.setattr(ProcessStage, "start", start)
    d = tmp_path / "src"
    d.mkdir()
    files = [d / f"f{i:03d}.txt" for i in range(100)] + [d / "a b.txt"]
    for f in files:
        f.write_text("x\n")
    chain = ["--chain", "filename.SpacesToUnderscores"]
    res = run(tmp_path, chain, [event(f) for f in files])
    assert res.status == 0, res.stderr
    assert [o["name"] for o in outputs(res)] == [f.name.replace(" ", "_") for f in files]
    own = [s for s in statements if OWN_TABLES.search(s)]
    assert len(own) == 1 and own[0].startswith("INSERT OR REPLACE INTO names"), own  # a b.txt's new name
    statements.clear()
    (files[-1]).unlink()
    res = run(tmp_path, chain, [event(files[-1], "deleted"), event(files[0], "modified")])
    assert res.status == 0, res.stderr
    assert [(o["kind"], o["name"]) for o in outputs(res)] == [("deleted", "a_b.txt"), ("modified", "f000.txt")]
    # the names table holds a row now: it is asked (and the deleted name forgotten)
    assert any(s.startswith("DELETE FROM names") for s in statements)


def test_a_rename_only_chain_opens_each_root_once_per_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The main thread opened the source root again for each file it checked; the root is now kept open for
    the round (sourcefile.Roots), and each file is still opened beneath it on its own: a symlink out of the
    root is refused and a vanished file dropped as before (test_process.py checks those outcomes too)."""
    from fileconveyor import sourcefile

    roots_opened: list[bytes] = []
    real_open_root = sourcefile._open_root

    def open_root(src: sourcefile.Source) -> int:
        roots_opened.append(src.root)
        return real_open_root(src)

    monkeypatch.setattr(sourcefile, "_open_root", open_root)
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    files = [d / "sub" / f"f {i}.txt" for i in range(200)]
    for f in files:
        f.write_text("x\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("s\n")
    (d / "sub" / "link.txt").symlink_to(secret)
    gone = d / "sub" / "gone.txt"
    gone.write_text("x\n")
    events = [event(f, root=d) for f in files] + [event(gone, root=d)]
    events.append({**event(files[0], root=d), "path": str(d / "sub" / "link.txt"), "rel": "sub/link.txt"})
    gone.unlink()
    res = run(tmp_path, ["--chain", "filename.SpacesToUnderscores"], events)
    assert res.status == 1, res.stderr  # the link: failed
    outs = outputs(res)
    assert [o["name"] for o in outs[:200]] == [f.name.replace(" ", "_") for f in files]
    assert [(o["rel"], "error" in o) for o in outs[200:]] == [("sub/link.txt", True)]
    assert "gone.txt: dropped" in res.stderr
    assert 1 <= len(roots_opened) <= 5, len(roots_opened)  # once per round, not per file (before: 202)


class KeepName(Processor):
    """A rename-only step that keeps every name (as filename.* does a name without spaces)."""

    name = "test.KeepName"
    renames = name_only = by_name = True

    def process(self, ctx: Context) -> Output:
        return Output(ctx.input, ctx.basename)

    def rename(self, name: bytes) -> bytes:
        return name


def test_a_deletion_after_a_file_back_at_its_base_name_carries_that_name(tmp_path: Path) -> None:
    """A name kept by an earlier chain (a_b.txt) is not the one a deletion gets once the file has been given its
    base name again: an event whose new name is its base name, in the same batch as its deletion, must pass that
    name on even though it leaves nothing to write while the names table is empty (the quick way of a
    rename-only chain)."""
    d = tmp_path / "src"
    d.mkdir()
    f = d / "a b.txt"
    f.write_text("x\n")
    res = run(tmp_path, ["--chain", "filename.SpacesToUnderscores"], [event(f)])
    assert res.status == 0, res.stderr
    assert [o["name"] for o in outputs(res)] == ["a_b.txt"]
    modified = event(f, "modified")
    res = run(tmp_path, ["--chain", f"{__name__}:KeepName"], [modified, event(f, "deleted")])
    assert res.status == 0, res.stderr
    assert [(o["kind"], o["name"]) for o in outputs(res)] == [("modified", "a b.txt"), ("deleted", "a b.txt")]
    # and with no name kept: nothing is written per event, and the deletion gets the same name
    g = d / "plain.txt"
    g.write_text("x\n")
    res = run(tmp_path, ["--chain", f"{__name__}:KeepName"], [event(g), event(g, "deleted")])
    assert res.status == 0, res.stderr
    assert [(o["kind"], o["name"]) for o in outputs(res)] == [("created", "plain.txt"), ("deleted", "plain.txt")]


def test_a_deletion_carries_the_last_name_given_in_its_batch(tmp_path: Path) -> None:
    """An event that came with a name of its own (x_y.txt, from an fc-process before) and then one of the same file
    without: the second gives the file its base name again, and a deletion after both in the same batch carries
    that name, not the first one's (the quick way of a rename-only chain leaves nothing pending for a file that
    keeps its base name only when no other name is pending for it)."""
    d = tmp_path / "src"
    d.mkdir()
    f = d / "a.txt"
    f.write_text("x\n")
    evs = [event(f, name="x_y.txt"), event(f, "modified"), event(f, "deleted")]
    res = run(tmp_path, ["--chain", f"{__name__}:KeepName"], evs)
    assert res.status == 0, res.stderr
    assert [(o["kind"], o["name"]) for o in outputs(res)] == [
        ("created", "x_y.txt"),
        ("modified", "a.txt"),
        ("deleted", "a.txt"),
    ]
