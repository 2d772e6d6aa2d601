"""What fc-transport does per small file copied to a local folder by its main thread (issue 18: the stage's CPU
per file).  Real runner, real transporter, real files; only counting spies."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fileconveyor import events as E
from fileconveyor import sourcefile
from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stopping import Stopper
from fileconveyor.transporters import PermanentError
from fileconveyor.transporters.base import safe_rel
from fileconveyor.transporters.local import SymlinkOrCopy

from .conftest import event, jsonl, tree


def _run(tmp_path: Path, dest: Path, stdin: io.BufferedIOBase | io.BytesIO) -> tuple[int, list[dict], str]:
    status, lines, err = _run_lines(tmp_path, dest, stdin)
    return status, [E.decode(line) for line in lines], err


def _run_lines(tmp_path: Path, dest: Path, stdin: io.BufferedIOBase | io.BytesIO) -> tuple[int, list[bytes], str]:
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=tmp_path / "t.db", drain_timeout=10)
    status = Runner(stage, opts, stdin, out, Reporter("fc-transport", err, 1), Stopper()).run()
    return status, out.getvalue().splitlines(keepends=True), err.getvalue()


def _count_roots(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    opened: list[bytes] = []
    real = sourcefile._open_root

    def open_root(src: sourcefile.Source) -> int:
        opened.append(src.root)
        return real(src)

    monkeypatch.setattr(sourcefile, "_open_root", open_root)
    return opened


def test_the_main_thread_opens_each_source_root_once_per_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source root was opened afresh for every file copied; it is now kept open for the runner's round, and
    each file is still opened beneath it on its own: a symlink out of the root is refused, a vanished file
    skipped, as before."""
    opened = _count_roots(monkeypatch)
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "d").mkdir(parents=True)
    for i in range(200):
        (src / "d" / f"f{i}.bin").write_bytes(bytes([i]) * 100)
    secret = tmp_path / "secret.txt"
    secret.write_text("s\n")
    (src / "d" / "link.bin").symlink_to(secret)
    (src / "d" / "gone.bin").write_bytes(b"x")
    evs = [event(src, f"d/f{i}.bin") for i in range(200)]
    evs += [event(src, "d/link.bin", size=2), event(src, "d/gone.bin")]
    (src / "d" / "gone.bin").unlink()
    status, outs, err = _run(tmp_path, dest, io.BytesIO(jsonl(evs)))
    assert status == 1, err  # the link: failed
    assert [o["transported"] for o in outs[:200]] == ["uploaded"] * 200
    assert [(o["rel"], "leads out" in o["error"]) for o in outs[200:]] == [("d/link.bin", True)]
    assert "gone.bin: skipped" in err
    assert tree(dest) == {f"d/f{i}.bin": bytes([i]) * 100 for i in range(200)}
    assert 1 <= len(opened) <= 5, len(opened)  # once per round, not per file (before: 202)


def test_a_source_root_replaced_between_rounds_is_opened_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roots kept for a round are closed at its end: a root directory replaced (moved away, a new one made
    under its name) before the next round is not read through the old one's descriptor."""
    opened = _count_roots(monkeypatch)
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.bin").write_bytes(b"old")
    first = event(src, "a.bin")
    r, w = os.pipe()

    def feed() -> None:
        with open(w, "wb") as pipe:
            pipe.write(jsonl([first]))
            pipe.flush()
            deadline = time.monotonic() + 20
            while not (dest / "a.bin").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # the round that copied it ends (its flush) and commits
            os.rename(src, tmp_path / "src.old")
            src.mkdir()
            (src / "a.bin").write_bytes(b"the new one")  # another size: the old one is not this event's file
            pipe.write(jsonl([event(src, "a.bin", kind="modified")]))

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with open(r, "rb", buffering=0) as stdin:
            status, outs, err = _run(tmp_path, dest, stdin)
    finally:
        feeder.join()
    assert status == 0, err
    assert [o["transported"] for o in outs] == ["uploaded", "uploaded"], err
    assert tree(dest) == {"a.bin": b"the new one"}
    assert len(opened) == 2


def test_a_change_after_the_check_before_publishing_publishes_the_whole_version_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is checked against the source after it was read whole and before its rename (a copy torn by a
    writer never takes the final name: test_source_open.py).  A change after that check leaves what was read
    one whole version: it is published and reported sent (the change's own event follows), where a second
    look after the rename used to report it 'not sent' although the destination held it."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 4096)
    ev = event(src, "a.bin")
    real_replace = os.replace

    def replace_after_a_write(*args: object, **kw: object) -> None:
        with open(src / "a.bin", "ab") as w:
            w.write(b"more")
        real_replace(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace_after_a_write)
    status, outs, err = _run(tmp_path, dest, io.BytesIO(jsonl([ev])))
    assert status == 0, err
    assert [o["transported"] for o in outs] == ["uploaded"]
    assert tree(dest) == {"a.bin": b"x" * 4096}


def _safe_rel_as_before(rel: bytes) -> bytes:
    """safe_rel without its shortcut for names that need nothing done (what it was)."""
    if b"\0" in rel or rel.startswith(b"/") or rel.endswith((b"/", b"/.")):
        raise PermanentError("refused")
    parts = [p for p in rel.split(b"/") if p not in (b"", b".")]
    if b".." in parts or not parts:
        raise PermanentError("refused")
    return b"/".join(parts)


NAMES = st.lists(st.sampled_from([b"a", b"b.css", b"", b".", b"..", b"\0", b"%", b" ", "é".encode(), b"~-_"]))


@given(NAMES.map(lambda parts: b"/".join(parts)))
def test_safe_rel_and_url_give_what_they_gave_without_their_shortcuts(rel: bytes) -> None:
    try:
        want: bytes | None = _safe_rel_as_before(rel)
    except PermanentError:
        want = None
    try:
        got: bytes | None = safe_rel(rel)
    except PermanentError:
        got = None
    assert got == want
    if want is not None:
        tp = SymlinkOrCopy.__new__(SymlinkOrCopy)
        tp.dest = type("D", (), {"base_url": "http://cdn/"})()  # type: ignore[assignment]
        assert tp.url(rel) == "http://cdn/" + quote(want, safe="/")


def test_an_uploaded_files_line_is_the_line_read_with_what_fc_transport_adds(tmp_path: Path) -> None:
    """The output event of an upload is the input event plus server, remote (remote_b64), url and transported:
    its line is the line read with those added before the new hop, not the whole event encoded again.  An
    event that already has one of them is encoded whole (one value per field, ours)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    (src / b"\xff.bin".decode("utf-8", "surrogateescape")).write_bytes(b"b")
    (src / "c.bin").write_bytes(b"c")
    odd: dict = {"v": 1, "kind": "created", "source": "site", "root": str(src), "size": 1}
    E.put_path(odd, "path", os.fsencode(src) + b"/\xff.bin")
    E.put_path(odd, "rel", b"\xff.bin")
    evs = [event(src, "a.bin", mtime=1.5), odd, event(src, "c.bin", url="http://elsewhere/c.bin", server="x")]
    read = jsonl(evs).splitlines(keepends=True)  # json.dumps: ", " and ": " between members, unlike encode
    status, lines, err = _run_lines(tmp_path, dest, io.BytesIO(b"".join(read)))
    assert status == 0, err
    assert tree(dest) == {"a.bin": b"a", "\udcff.bin": b"b", "c.bin": b"c"}
    outs = [E.decode(line) for line in lines]
    assert [o["transported"] for o in outs] == ["uploaded"] * 3
    added = {"server": "file", "remote": "a.bin", "url": outs[0]["url"], "transported": "uploaded"}
    assert outs[0] == {**evs[0], **added, "hop": outs[0]["hop"]}
    assert E.members({**added, "n": 1.5}, (*added, "n")) == b"," + E.encode({**added, "n": 1.5})[1:-2]
    assert lines[0] == read[0][:-2] + E.members(added, tuple(added)) + b',"hop":' + E.hop_json(outs[0]["hop"]) + b"}\n"
    assert list(outs[1])[-6:] == ["server", "remote", "remote_b64", "url", "transported", "hop"]
    assert E.get_path(outs[1], "remote") == b"\xff.bin" and lines[1].startswith(read[1][:-2])
    # the third had a url and a server: encoded whole (no ", " of json.dumps), each field once, with our values
    assert (outs[2]["url"], outs[2]["server"]) == (outs[0]["url"].replace("a.bin", "c.bin"), "file")
    assert b", " not in lines[2] and lines[2].count(b'"url":') == lines[2].count(b'"server":') == 1
