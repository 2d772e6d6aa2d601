"""A rename-only chain checks each event's file with one lstat beneath its directory, opened once per round, not
by opening the file (issue 18: fc-process's per-line CPU; stages/process/names.py).  The file is read by no one
here: the transporter opens it beneath its root again before reading a byte.  These tests show the outcomes a
worker's full check gives stay the same for every file that is not a plain, regular, readable one of the event."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fileconveyor import beneath, sourcefile
from fileconveyor.processors import Context, Output, Processor
from fileconveyor.sourcefile import Roots, SourceOutside, check_source, from_event
from fileconveyor.stages.process.names import NameChecks

from .conftest import event, outputs, run

CHAIN = ["--chain", "filename.SpacesToUnderscores"]


def test_a_rename_only_chain_opens_no_source_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file was opened (openat2 beneath the root, fstat, close) to be named: now its directory is opened
    once per round and the file only looked at; the names and the drop of a vanished file are as before."""
    files_opened: list[bytes] = []
    real = sourcefile._open_checked

    def open_checked(src: sourcefile.Source, roots: Roots | None = None) -> tuple[int, os.stat_result]:
        files_opened.append(src.rel)
        return real(src, roots)

    monkeypatch.setattr(sourcefile, "_open_checked", open_checked)
    dirs_opened: list[bytes] = []
    real_open_file = beneath.open_file

    def open_file(dfd: int, root: bytes, rel: bytes, flags: int) -> int:
        dirs_opened.append(rel)
        return real_open_file(dfd, root, rel, flags)

    monkeypatch.setattr(beneath, "open_file", open_file)
    real_init = NameChecks.__init__

    def init(self: NameChecks, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        self.euid, self.groups = 12345, set()  # (not root: the mode bits of a file of another user count)

    monkeypatch.setattr(NameChecks, "__init__", init)
    root = tmp_path / "src"
    files = []
    for d in ("a", "b c"):
        (root / d).mkdir(parents=True)
        files += [root / d / f"f {i}.txt" for i in range(100)]
    for f in files:
        f.write_text("x\n")
    (root / "b c" / "f 7.txt").chmod(0o640)  # others may not read it: "we" may not, by its mode
    gone = root / "a" / "gone.txt"
    gone.write_text("x\n")
    events = [event(f, root=root) for f in files] + [event(gone, root=root)]
    gone.unlink()
    res = run(tmp_path, CHAIN, events)
    assert res.status == 0, res.stderr
    assert [o["name"] for o in outputs(res)] == [f.name.replace(" ", "_") for f in files]
    assert "gone.txt: dropped" in res.stderr
    # the vanished one and the one we may not read, by the full check (which root may open): before, all 201
    assert files_opened == [b"b c/f 7.txt", b"a/gone.txt"], files_opened
    dirs = [rel for rel in dirs_opened if rel not in files_opened]  # (the full check opens its file by this too)
    assert set(dirs) == {b"a", b"b c"} and len(dirs) <= 10, dirs  # once per round, not per file


def _site(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "src", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret file.txt").write_text("secret\n")
    (root / "d" / "good file.txt").write_text("x\n")
    return root, outside


def test_what_the_lstat_does_not_take_goes_to_the_full_check(tmp_path: Path) -> None:
    """In one round, after a good file of the same directory (the directory is held open then): a link out of
    the root, a FIFO, a file replaced by another or grown since the event, a vanished one, a forged path.  Each
    gets the full check's outcome; an in-root link to a file is followed, as a worker follows it."""
    root, outside = _site(tmp_path)
    d = root / "d"
    good = event(d / "good file.txt", root=root)
    (d / "in root.txt").symlink_to("good file.txt")
    in_root = {**event(d / "good file.txt", root=root), "path": str(d / "in root.txt"), "rel": "d/in root.txt"}
    (d / "link out.txt").symlink_to(outside / "secret file.txt")
    link_out = {**event(outside / "secret file.txt"), "root": str(root)}
    link_out.update(path=str(d / "link out.txt"), rel="d/link out.txt")
    os.mkfifo(d / "fifo file")
    fifo = {**good, "path": str(d / "fifo file"), "rel": "d/fifo file", "ino": os.stat(d / "fifo file").st_ino}
    fifo["size"] = 0
    (d / "other file.txt").write_text("x\n")
    replaced = event(d / "other file.txt", root=root)
    (d / "other file.txt").unlink()
    (d / "other file.txt").write_text("y\n")
    replaced["ino"] = os.stat(d / "good file.txt").st_ino  # the same size, surely another inode
    grown = {**good, "size": good["size"] + 1}
    (d / "gone file.txt").write_text("x\n")
    gone = event(d / "gone file.txt", root=root)
    (d / "gone file.txt").unlink()
    # root + rel name the good file, path another one of the same directory: path is not root + rel
    forged = {**good, "path": str(d / "in root.txt")}
    res = run(tmp_path, CHAIN, [good, in_root, link_out, fifo, replaced, grown, gone, forged, good])
    assert res.status == 1, res.stderr
    outs = outputs(res)
    assert [(Path(o["path"]).name, o["name"], "error" in o) for o in outs] == [
        ("good file.txt", "good_file.txt", False),
        ("in root.txt", "in_root.txt", False),
        ("link out.txt", "link out.txt", True),
        ("fifo file", "fifo file", True),
        ("in root.txt", "in root.txt", True),  # forged
        ("good file.txt", "good_file.txt", False),
    ], outs
    assert "leads out of" in outs[2]["error"] and "not a regular file" in outs[3]["error"]
    assert "path is not root + rel" in outs[4]["error"]
    assert "other file.txt: dropped" in res.stderr and "gone file.txt: dropped" in res.stderr
    assert res.stderr.count("good file.txt: dropped") == 1  # the grown one: another size than the event says


def test_a_source_name_or_root_not_given_is_refused_after_a_good_one_of_the_same_directory(tmp_path: Path) -> None:
    """--source: the directory held open for one event's source and root serves no event of another source
    name or root, though path, root and rel be consistent."""
    root, outside = _site(tmp_path)
    good = event(root / "d" / "good file.txt", root=root, source="s")
    other_name = {**good, "source": "t"}
    (outside / "d").mkdir()
    (outside / "d" / "good file.txt").write_text("x\n")
    other_root = event(outside / "d" / "good file.txt", root=outside, source="s")
    res = run(tmp_path, [*CHAIN, "--source", f"s={root}"], [good, other_name, other_root, good])
    assert res.status == 1, res.stderr
    outs = outputs(res)
    assert [("error" in o, o["name"]) for o in outs] == [
        (False, "good_file.txt"),
        (True, "good file.txt"),
        (True, "good file.txt"),
        (False, "good_file.txt"),
    ]
    assert all("no --source given to fc-process" in o["error"] for o in outs[1:3])


def test_a_directory_swapped_for_a_link_out_of_the_root_is_refused_from_the_next_round(tmp_path: Path) -> None:
    """The directory's resolution is shared by one round's events (as the root's is, sourcefile.Roots): a swap
    is seen once the round ends (NameChecks.close), and then the full check refuses the link.  Nothing of the
    file is read here in any case: the transporter opens it beneath its root before reading."""
    root, outside = _site(tmp_path)
    ev = event(root / "d" / "good file.txt", root=root)
    checks = NameChecks(Roots(), lambda ev, src: src)
    path = os.fsencode(ev["path"])
    assert checks.plain(ev, path)
    (root / "d").rename(tmp_path / "moved")
    (outside / "d").mkdir()
    (outside / "d" / "good file.txt").write_bytes((tmp_path / "moved" / "good file.txt").read_bytes())
    (root / "d").symlink_to(outside / "d")
    checks.close()  # the end of the round
    checks.roots.close()
    assert not checks.plain(ev, path)
    with pytest.raises(SourceOutside, match="leads out of"):
        check_source(from_event(ev))


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "readable"),
    [
        (1000, 1000, 0o400, True),  # ours, owner may read
        (1000, 1000, 0o044, False),  # ours, owner may not (group and others may: not us)
        (2000, 1000, 0o040, True),  # our group may read
        (2000, 1000, 0o404, False),  # our group may not, though others may
        (2000, 3000, 0o004, True),  # others may read
        (2000, 3000, 0o440, False),
    ],
)
def test_a_file_we_may_not_read_goes_to_the_full_check(uid: int, gid: int, mode: int, readable: bool) -> None:
    """What an open would refuse with EACCES, told by the mode bits as the kernel's check does without ACLs
    (root reads anything).  Not readable: the full check opens it and the worker fails the event, as before."""
    checks = NameChecks(Roots(), lambda ev, src: src)
    checks.euid, checks.groups = 1000, {1000}
    st = os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))
    assert checks._readable(st) is readable


class Slasher(Processor):
    """A by_name step that breaks the rule on base names."""

    name = "test.Slasher"
    renames = name_only = by_name = True

    def process(self, ctx: Context) -> Output:
        return Output(ctx.input, self.rename(ctx.basename))

    def rename(self, name: bytes) -> bytes:
        return b"../" + name


class Sneaky(Slasher):
    """A by_name step that renames without declaring it."""

    name = "test.Sneaky"
    renames = False

    def rename(self, name: bytes) -> bytes:
        return name.upper()


def test_a_by_name_step_s_name_gets_the_checks_a_processor_s_name_gets(tmp_path: Path) -> None:
    """A step whose name comes from rename() alone (no Context: Processor.by_name) is held to checked()'s rules,
    with the same message; the template's by_name step renames as its process() does."""
    root, _ = _site(tmp_path)
    ev = event(root / "d" / "good file.txt", root=root)
    for cls, why in ((Slasher, "holds '/'"), (Sneaky, "does not declare renames")):
        res = run(tmp_path / cls.__name__, ["--processor", f"{__name__}:{cls.__name__}"], [ev])
        assert res.status == 1, res.stderr
        (out,) = outputs(res)
        assert out["error"].startswith(cls.name) and why in out["error"], out
        assert out["name"] == "good file.txt" and out["processed"] == []
    res = run(tmp_path / "t", ["--processor", "fileconveyor.processors._template:Lowercase", *CHAIN], [ev])
    assert res.status == 0, res.stderr
    assert [(o["name"], o["processed"]) for o in outputs(res)] == [
        ("good_file.txt", ["_template.Lowercase", "filename.SpacesToUnderscores"])
    ]


def test_a_vanished_root_drops_the_event_as_the_full_check_does(tmp_path: Path) -> None:
    """The root opened for the directory is gone: the full check's outcome and message, in the main thread."""
    root, _ = _site(tmp_path)
    ev = event(root / "d" / "good file.txt", root=root)
    other = tmp_path / "other"
    (other / "d").mkdir(parents=True)
    (other / "d" / "x.txt").write_text("x\n")
    kept = event(other / "d" / "x.txt", root=other)
    (root / "d" / "good file.txt").unlink()
    (root / "d").rmdir()
    root.rmdir()
    res = run(tmp_path, CHAIN, [ev, kept])
    assert res.status == 0, res.stderr
    assert [o["name"] for o in outputs(res)] == ["x.txt"]
    assert "good file.txt: dropped" in res.stderr and "its root" in res.stderr and "is gone" in res.stderr
