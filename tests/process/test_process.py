"""fc-process behaviour on real files and real tools: lossless images, hostile names,
parallel chains, per-path order, names of deleted files, errors, work files."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from fileconveyor import events as E
from fileconveyor.cli.process import main
from fileconveyor.processors.image_optimizer import sniff
from tests.conftest import call, require_tool
from tests.processors.conftest import HOSTILE, noise_image
from tests.relay import main as filter_main  # an fc reader with a state file (fc-filter keeps none)

from .conftest import SRC, by_path, content, event, file_of, lines, outputs, run, work_root


@pytest.fixture
def image_tools() -> None:
    for tool in ("jpegtran", "optipng", "gifsicle"):
        require_tool(tool)


def frames(path: bytes | Path) -> list[tuple[tuple[int, int], bytes]]:
    """Every frame as displayed, RGBA: what a lossless optimiser must keep."""
    with Image.open(os.fsdecode(path)) as im:
        return [(f.size, f.convert("RGBA").tobytes()) for f in ImageSequence.Iterator(im)]


def make_images(d: Path, prefix: bytes = b"", seed: int = 1) -> list[bytes]:
    """Pillow-generated JPEG, PNG, single and animated GIF, plus the real-world fixtures."""
    d.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(d) + b"/" + prefix
    noise_image(size=(160, 120), seed=seed).save(os.fsdecode(base + b"photo.jpg"), quality=92)
    noise_image("RGBA", (90, 70), seed=seed + 1).save(os.fsdecode(base + b"alpha.png"), compress_level=0)
    noise_image(size=(60, 40), seed=seed + 2).quantize(48).save(os.fsdecode(base + b"single.gif"))
    anim = [noise_image(size=(40, 30), seed=seed + s).quantize(16) for s in (3, 4, 5)]
    anim[0].save(os.fsdecode(base + b"anim.gif"), save_all=True, append_images=anim[1:], loop=0, duration=80)
    for real in ("druplicon.png", "header.jpg", "bullet.gif"):
        shutil.copyfile(SRC / "img" / real, os.fsdecode(base + real.encode()))
    return [base + n for n in (b"photo.jpg", b"alpha.png", b"single.gif", b"anim.gif")] + [
        base + n for n in (b"druplicon.png", b"header.jpg", b"bullet.gif")
    ]


@pytest.mark.usefixtures("image_tools")
def test_images_are_lossless_never_larger_and_named_for_their_content(tmp_path: Path) -> None:
    files = make_images(tmp_path / "src")
    res = run(tmp_path, ["--chain", "image_optimizer.Max,unique_filename.MD5"], [event(f) for f in files])
    assert res.status == 0, res.stderr
    outs = by_path(outputs(res))
    assert set(outs) == set(files)
    shrunk = 0
    for src in files:
        (ev,) = outs[src]
        out = file_of(ev)
        assert frames(out) == frames(src), src
        assert os.path.getsize(out) <= os.path.getsize(src)
        shrunk += os.path.getsize(out) < os.path.getsize(src)
        name = E.get_path(ev, "name")
        ext = {"JPEG": b".jpg", "PNG": b".png", "GIF": b".gif"}[sniff(out)]
        assert re.fullmatch(rb"[a-z]+_[0-9a-f]{32}" + re.escape(ext), name), name  # extension matches content
    assert shrunk >= 5
    assert E.get_path(outs[files[2]][0], "name").endswith(b".png")  # a single-frame GIF became a PNG
    assert len(frames(file_of(outs[files[3]][0]))) == 3  # the animated GIF stayed animated


@pytest.mark.usefixtures("image_tools")
def test_hostile_names_through_external_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "src"
    files = []
    for i, prefix in enumerate(HOSTILE):
        files += make_images(d / f"d{i}", prefix, seed=i)[:2]
        txt = os.fsencode(d / f"d{i}") + b"/" + prefix + b"txt"
        with open(txt, "wb") as f:
            f.write(b"hello %d\n" % i)
        files.append(txt)
    chain = ["--chain", "image_optimizer.Max", "--processor", "cmd:sed -e s/hello/HELLO/ {in}"]
    monkeypatch.chdir(tmp_path)  # "$(touch pwned)" would land here if a name reached a shell
    res = run(tmp_path, chain, [event(f) for f in files])
    assert res.status == 0, res.stderr
    outs = by_path(outputs(res))
    assert set(outs) == set(files)
    for src in files:
        (ev,) = outs[src]
        assert E.get_path(ev, "name") == os.path.basename(src)  # exact bytes, b64 when not UTF-8
        out = file_of(ev)
        if src.endswith(b"txt"):
            assert content(out).startswith(b"HELLO ")
        else:
            assert frames(out) == frames(src)
    assert not list(tmp_path.rglob("pwned")), "a file name was interpreted by a shell"
    assert any("path_b64" in ev for evs in outs.values() for ev in evs)


@pytest.mark.usefixtures("image_tools")
def test_parallel_chains_on_the_same_name_in_different_dirs(tmp_path: Path) -> None:
    files = []
    for i in range(24):
        d = tmp_path / "src" / f"dir{i}"
        d.mkdir(parents=True)
        noise_image(size=(64 + i, 48), seed=i).save(d / "logo.png", compress_level=0)
        noise_image(size=(40, 30 + i), seed=100 + i).quantize(32).save(d / "icon.gif")
        files += [os.fsencode(d / "logo.png"), os.fsencode(d / "icon.gif")]
    res = run(tmp_path, ["--chain", "image_optimizer.Max"], [event(f) for f in files], jobs=4)
    assert res.status == 0, res.stderr
    outs = by_path(outputs(res))
    produced = [file_of(outs[f][0]) for f in files]
    assert len(set(produced)) == len(files)  # no two chains shared an output path
    for src, out in zip(files, produced, strict=True):
        assert frames(out) == frames(src)


def test_per_path_order_is_kept_with_many_jobs(tmp_path: Path) -> None:
    """Events of one path leave in the order they came, whatever runs in parallel."""
    d = tmp_path / "src"
    d.mkdir()
    evs = []
    for i in range(40):
        p = d / f"f{i % 4}.txt"
        p.write_bytes(b"%02d" % i)  # one size: the events of a path stay true to its file (ino, size)
        # deleted events need no processing: they must still wait for the path's earlier events
        evs.append(event(p, "deleted" if i % 3 == 2 else "modified", id=f"{i:032x}"))
    # a command that takes a random moment, so the jobs finish out of order
    chain = [
        "--processor",
        'cmd:sh -c \'sleep 0.0$(od -An -N1 -tu1 /dev/urandom | tr -d " " | cut -c1); cat "$1"\' sh {in}',
    ]
    res = run(tmp_path, chain, evs, jobs=8)
    assert res.status == 0, res.stderr
    for path, got in by_path(outputs(res)).items():
        expected = [e["id"] for e in evs if E.get_path(e, "path") == path]
        assert [e["id"] for e in got] == expected


def test_deleted_events_get_the_last_name_emitted_even_in_a_later_run(tmp_path: Path) -> None:
    f = tmp_path / "a file.txt"
    f.write_text("hello\n")
    chain = ["--chain", "filename.SpacesToUnderscores,unique_filename.MD5"]
    first = outputs(run(tmp_path, chain, [event(f)]))
    assert first[0]["name"] == "a_file_b1946ac92492d2347c6235b4d2611184.txt"
    f.unlink()
    second = outputs(run(tmp_path, chain, [event(f, "deleted")]))
    assert second[0]["name"] == first[0]["name"]
    again = outputs(run(tmp_path, chain, [event(f, "deleted")]))  # forgotten once deleted
    # as for a path another worker processed: what the name-only steps make of it; MD5 needs the content
    assert again[0]["name"] == "a_file.txt"


def test_processor_error_is_an_event_with_error_and_the_rest_goes_on(tmp_path: Path) -> None:
    """(The golden closure_compiler case has a real tool's error; this one is quicker.)"""
    good, bad = SRC / "text" / "app.js", SRC / "text" / "broken.js"
    check = 'grep -q function "$1" && cat "$1" || { echo ERROR: no function in it >&2; exit 3; }'
    res = run(tmp_path, ["--processor", f"cmd:sh -c '{check}' sh {{in}}"], [event(bad), event(good)])
    assert res.status == 1
    outs = by_path(outputs(res))
    (failed,) = outs[os.fsencode(bad)]
    assert (
        failed["error"].startswith("cmd:sh -c ") and "sh failed (exit 3): ERROR: no function in it" in failed["error"]
    )
    assert failed["error_kind"] == "permanent" and failed["name"] == "broken.js" and "file" not in failed
    assert failed["processed"] == []
    good_file = file_of(outs[os.fsencode(good)][0])
    assert content(good_file) == content(good)
    # a permanent failure is an error, not a warning (the file is not published)
    assert re.search(r"^fc-process: error: .*broken\.js: cmd:sh -c .*ERROR: no function in it$", res.stderr, re.M)
    assert "warning" not in res.stderr
    # only the good file's directory: the failed chain's files are gone
    assert [p.name for p in work_root(tmp_path).iterdir()] == [os.path.basename(os.path.dirname(good_file)).decode()]


def test_vanished_file_is_dropped_with_a_note(tmp_path: Path) -> None:
    f = tmp_path / "gone.css"
    f.write_text("a { color: red }\n")
    ev = event(f)
    f.unlink()
    keep = tmp_path / "kept.css"
    keep.write_text("b { color: blue }\n")
    res = run(tmp_path, ["--chain", "minify.CSS"], [ev, event(keep)])
    assert res.status == 0, res.stderr
    assert [o["name"] for o in outputs(res)] == ["kept.css"]
    assert "gone.css: vanished before it was processed; dropped" in res.stderr


def test_missing_tool_fails_at_start_with_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    res = run(tmp_path, ["--chain", "filename.SpacesToDashes,image_optimizer.Max"], b"")
    assert res.status == 3
    assert "apt-get install libjpeg-turbo-progs" in res.stderr and "apt-get install optipng" in res.stderr
    assert not (tmp_path / "process.db").exists()  # nothing started
    res = run(tmp_path, ["--processor", "cmd:no-such-tool-xyz {in}"], b"")
    assert res.status == 3 and "no-such-tool-xyz (not found on PATH)" in res.stderr


def test_list_shows_every_processor_and_its_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fileconveyor.processors import PROCESSORS

    res = call(main, ["--list"])
    assert res.status == 0
    text = res.stdout.decode()
    for name in PROCESSORS.builtins:
        assert re.search(rf"^{re.escape(name)} +\S+ +\S", text, re.M), name
    if shutil.which("optipng"):
        assert re.search(r"^image_optimizer\.Max +installed ", text, re.M)
    monkeypatch.setenv("PATH", str(tmp_path))
    text = call(main, ["--list"]).stdout.decode()
    assert re.search(r"^image_optimizer\.Max +MISSING .*apt-get install optipng", text, re.M)
    assert re.search(r"^minify\.CSS +- ", text, re.M)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give the processors to run"),
        (["--chain", "a,,b"], "empty processor name"),
        (["--chain", "link_updater.CSSURLUpdater"], "run one fc-process per destination server"),
        (["--chain", "link_updater.CSSURLUpdater", "--server", "cdn"], "--record-db"),
        (["--chain", "minify.CSS", "--base-path", "site/"], "starts with /"),
    ],
)
def test_usage_errors(argv: list[str], message: str, tmp_path: Path) -> None:
    res = run(tmp_path, argv, b"")
    assert res.status == 2 and message in res.stderr, res.stderr


def test_unknown_processor_is_a_configuration_error(tmp_path: Path) -> None:
    res = run(tmp_path, ["--chain", "no_such.Processor"], b"")
    assert res.status == 3 and "fc-process: error:" in res.stderr


def test_work_files_go_once_acknowledged_and_superseded(tmp_path: Path) -> None:
    srcs = []
    for i in range(3):
        p = tmp_path / f"s{i}.css"
        p.write_text(f".a{i} {{ color : red ; }}\n")
        srcs.append(p)
    out = tmp_path / "out.jsonl"
    argv = ["--chain", "minify.CSS", "--output", str(out)]
    res = run(tmp_path, argv, [event(p) for p in srcs])
    assert res.status == 0, res.stderr
    files = [file_of(e) for e in outputs(type(res)(0, out.read_bytes(), ""))]
    assert len(files) == 3 and all(os.path.isfile(f) for f in files)
    stray = work_root(tmp_path) / "eSTRAY"  # as a kill -9 mid-chain leaves it
    stray.mkdir()
    # fc-process again, before any reader: the files stay (a reader may still need them); the stray goes
    assert run(tmp_path, argv, b"").status == 0
    assert all(os.path.isfile(f) for f in files) and not stray.exists()
    # an fc reader takes the lines and acknowledges them in fc-process's state file: the latest copy of each
    # path still stays, for a transfer that failed and is retried later (issue 17, finding 2)
    res = call(filter_main, ["--input", str(out), "--state", str(tmp_path / "f.db")])
    assert res.status == 0 and len(res.stdout.splitlines()) == 3
    assert run(tmp_path, argv, b"").status == 0
    assert all(os.path.isfile(f) for f in files)
    # a newer version of two paths and the deletion of the third supersede them: once acknowledged, they go
    srcs[0].write_text(".b { color : blue ; }\n")
    srcs[1].write_text(".c { color : green ; }\n")
    out2 = tmp_path / "out2.jsonl"
    later = [event(srcs[0], "modified"), event(srcs[1], "modified"), event(srcs[2], "deleted")]
    assert run(tmp_path, ["--chain", "minify.CSS", "--output", str(out2)], later).status == 0
    newer = [file_of(e) for e in outputs(type(res)(0, out2.read_bytes(), "")) if "file" in e]
    assert len(newer) == 2
    assert call(filter_main, ["--input", str(out2), "--state", str(tmp_path / "f.db")]).status == 0
    assert run(tmp_path, argv, b"").status == 0
    assert not any(os.path.exists(f) for f in files)
    assert all(os.path.isfile(f) for f in newer)  # the current copies stay
    assert len(list(work_root(tmp_path).iterdir())) == 2


def test_nothing_is_written_outside_the_work_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_images(src) if shutil.which("optipng") else []
    (src / "x.css").write_text("a  {  color: red }\n")
    files.append(os.fsencode(src / "x.css"))
    before = {p: p.stat().st_mtime_ns for p in src.iterdir()}
    chain = ["--chain", "minify.CSS,unique_filename.MD5"] + (
        ["--chain", "image_optimizer.Max"] if len(files) > 1 else []
    )
    res = run(tmp_path, chain, [event(f) for f in files])
    assert res.status == 0, res.stderr
    assert {p: p.stat().st_mtime_ns for p in src.iterdir()} == before
    assert {p.name for p in tmp_path.iterdir()} <= {
        "src",
        "work",
        "process.db",
        "process.db-wal",
        "process.db-shm",
        "process.db.lock",
    }
    for ev in outputs(res):
        if "file" in ev:
            assert E.get_path(ev, "file").startswith(os.fsencode(work_root(tmp_path)) + b"/")


def test_pass_through_adds_name_only(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("x\n")
    ev = event(f, extra_field={"kept": True})
    res = run(tmp_path, ["--chain", "image_optimizer.Max"], lines([ev]))
    (out,) = outputs(res)
    assert out.pop("hop")
    assert out == {**ev, "name": "notes.txt", "processed": []}


def test_third_party_processor_from_an_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package declaring a ``fileconveyor.processors`` entry point (a real
    dist-info directory on sys.path, as pip leaves it)."""
    site = tmp_path / "site-packages"
    (site / "fcplug-1.0.dist-info").mkdir(parents=True)
    (site / "fcplug-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fcplug\nVersion: 1.0\n")
    (site / "fcplug-1.0.dist-info" / "entry_points.txt").write_text(
        "[fileconveyor.processors]\nfcplug.Shout = fcplug:Shout\n"
    )
    (site / "fcplug.py").write_text(
        "import os\n"
        "from fileconveyor.processors import Output, Processor\n"
        "class Shout(Processor):\n"
        "    name = 'fcplug.Shout'\n"
        "    description = 'upper-cases text files'\n"
        "    extensions = ('.txt',)\n"
        "    def process(self, ctx):\n"
        "        out = os.path.join(ctx.scratch(), b'out.txt')\n"
        "        with open(ctx.input, 'rb') as f, open(out, 'xb') as g:\n"
        "            g.write(f.read().upper())\n"
        "        return Output(out, ctx.basename)\n"
    )
    monkeypatch.syspath_prepend(str(site))
    src = tmp_path / "hi.txt"
    src.write_text("hello\n")
    res = run(tmp_path, ["--processor", "fcplug.Shout"], [event(src)])
    assert res.status == 0, res.stderr
    (out,) = outputs(res)
    assert content(file_of(out)) == b"HELLO\n" and out["processed"] == ["fcplug.Shout"]
    assert re.search(r"^fcplug\.Shout +- +upper-cases text files", call(main, ["--list"]).stdout.decode(), re.M)


def test_a_chain_that_only_renames_needs_no_work_directory_and_no_extra_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: fc-process made and removed a work directory per file, on 32 threads, for a chain that only
    renames.  Name-only steps are now decided in the main thread; the workers are --jobs, no more."""
    made: list[bytes] = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(real_mkdtemp(*a, **k)) or made[-1])
    started: list[str] = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda t: started.append(t.name) or real_start(t))
    d = tmp_path / "src"
    d.mkdir()
    files = []
    for i in range(30):
        files.append(d / f"file {i}.txt")
        files[-1].write_text(f"{i}\n")
    chain = ["--chain", "filename.SpacesToUnderscores,unique_filename.Mtime"]
    res = run(tmp_path, chain, [event(f) for f in files], jobs=2)
    assert res.status == 0, res.stderr
    outs = by_path(outputs(res))
    for f in files:
        (out,) = outs[os.fsencode(f)]
        stem = f.name[:-4].replace(" ", "_")
        assert out["name"] == f"{stem}_{f.stat().st_mtime_ns // 10**9}.txt"
        assert out["processed"] == ["filename.SpacesToUnderscores", "unique_filename.Mtime"]
        assert "file" not in out  # the source itself goes, under its new name
    assert made == []
    assert len([n for n in started if re.fullmatch(r"-\d+", n)]) == 2  # the lane's workers: --jobs


def test_a_deletion_in_the_same_batch_carries_the_name_decided_just_before(tmp_path: Path) -> None:
    """A name decided in the main thread is not in the names table until the batch commits: a deletion of the
    same path read in the same batch must still get it, in this run and the next."""
    d = tmp_path / "src"
    d.mkdir()
    f = d / "a b.txt"
    f.write_text("x\n")
    created = event(f)
    chain = ["--chain", "filename.SpacesToDashes"]
    res = run(tmp_path, chain, [created, event(f, "deleted"), created])
    assert res.status == 0, res.stderr
    assert [(o["kind"], o["name"]) for o in outputs(res)] == [
        ("created", "a-b.txt"),
        ("deleted", "a-b.txt"),
        ("created", "a-b.txt"),
    ]
    f.unlink()
    (later,) = outputs(run(tmp_path, chain, [event(f, "deleted")]))
    assert later["name"] == "a-b.txt"


def test_a_name_only_chain_drops_a_vanished_file_and_refuses_a_link_out_of_the_root(tmp_path: Path) -> None:
    """The main thread opens the source as a worker would: the same outcomes, without a copy."""
    d = tmp_path / "src"
    d.mkdir()
    gone, kept, secret = d / "gone file.txt", d / "kept file.txt", tmp_path / "secret.txt"
    for p in (gone, kept, secret):
        p.write_text("x\n")
    ev_gone = event(gone)
    gone.unlink()
    link = d / "link file.txt"
    link.symlink_to(secret)
    ev_link = {**event(kept), "path": str(link), "rel": "link file.txt"}
    res = run(tmp_path, ["--chain", "filename.SpacesToUnderscores"], [ev_gone, ev_link, event(kept)])
    assert res.status == 1, res.stderr
    outs = outputs(res)
    assert [(o["rel"], o["name"], "error" in o) for o in outs] == [
        ("link file.txt", "link file.txt", True),
        ("kept file.txt", "kept_file.txt", False),
    ]
    assert outs[0]["error"].startswith("fc-process: ") and "file" not in outs[0]
    assert "gone file.txt: dropped" in res.stderr or "gone file.txt: vanished" in res.stderr
