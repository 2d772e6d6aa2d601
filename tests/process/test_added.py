"""fc-process passes a line it only adds ``processed`` and ``name`` to (a rename-only chain, a file no processor
applies to, a deletion) as it read it, those two fields added before the new hop (Done.added, events.members),
instead of encoding the whole event again: about 4 of the 5 us of an encode, every line of a rename-only chain."""

from __future__ import annotations

from pathlib import Path

from fileconveyor import events as E
from fileconveyor.cli.process import main
from tests.conftest import call


def test_a_renamed_file_s_line_is_the_line_read_with_processed_and_name_added(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "a b.bin").write_bytes(b"x")
    (root / "café.bin").write_bytes(b"y")
    # JSON that an encoder would write differently: an escaped non-ASCII name, a float with a trailing zero
    lines = [
        b'{"v":1,"id":"1","kind":"created","source":"s","root":"%s","path":"%s/a b.bin","rel":"a b.bin","n":2.50}\n',
        b'{"v":1,"id":"2","kind":"created","source":"s","root":"%s","path":"%s/caf\\u00e9.bin","rel":"caf\\u00e9.bin",'
        b'"n":2.50}\n',
        b'{"v":1,"id":"3","kind":"deleted","source":"s","root":"%s","path":"%s/gone.bin","rel":"gone.bin","n":2.50}\n',
    ]
    lines = [line.replace(b"%s", str(root).encode()) for line in lines]
    argv = ["--chain", "filename.SpacesToUnderscores", "--state", str(tmp_path / "p.db"), "--jobs", "1"]
    got = call(main, argv, b"".join(lines))
    assert got.status == 0, got.stderr
    out = got.stdout.splitlines(keepends=True)
    assert len(out) == 3
    names = {"1": "a_b.bin", "2": "café.bin", "3": "gone.bin"}
    for line, written in zip(lines, sorted(out, key=lambda x: E.decode(x)["id"]), strict=True):
        assert written.startswith(line[:-2] + b',"processed":['), written  # as read, the two fields added
        ev = E.decode(written)
        assert ev["name"] == names[ev["id"]] and ev["n"] == 2.5
        assert ev["processed"] == (["filename.SpacesToUnderscores"] if ev["id"] == "1" else ev["processed"])


def test_an_event_that_had_processed_or_name_is_encoded_again(tmp_path: Path) -> None:
    """Its fields keep their place and get new values: the line cannot be the one read with fields added."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "x.bin").write_bytes(b"x")
    line = (
        b'{"v":1,"kind":"created","root":"%s","path":"%s/x.bin","rel":"x.bin","processed":["a.B"],"n":2.50}\n'.replace(
            b"%s", str(root).encode()
        )
    )
    argv = ["--chain", "filename.SpacesToUnderscores", "--state", str(tmp_path / "p.db"), "--jobs", "1"]
    got = call(main, argv, line)
    assert got.status == 0, got.stderr
    ev = E.decode(got.stdout)
    assert list(ev)[:6] == ["v", "kind", "root", "path", "rel", "processed"] and ev["n"] == 2.5
    assert ev["processed"][0] == "a.B" and ev["name"] == "x.bin"
