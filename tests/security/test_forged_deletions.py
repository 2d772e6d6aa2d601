"""A deleted event is as forgeable as any (anyone who can publish to the broker's stream writes events): fc-transport
refuses one whose source is no --source it was given, as it refuses to upload from one, and does not delete the
remote copy of a file that is still at the source (a forged or stale deletion; a file really deleted and made
again has its own created event after it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.transport.conftest import env, event, jsonl, lines, transport  # noqa: F401 - fixture


def _setup(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Path, list[str]]:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "css").mkdir(parents=True)
    for name in ("a.css", "b.css", "c.css"):
        (src / "css" / name).write_bytes(b"body{}")
    args = ["--to", "file://" + quote(str(dest)), "--state", str(tmp_path / "t.db"), "--source", f"site={src}"]
    up = transport(args, env, jsonl([event(src, f"css/{n}") for n in ("a.css", "b.css", "c.css")]))
    assert up.returncode == 0, up.stderr
    assert sorted(p.name for p in (dest / "css").iterdir()) == ["a.css", "b.css", "c.css"]
    return src, dest, args


def test_a_deletion_of_a_file_still_at_the_source_deletes_nothing(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, dest, args = _setup(tmp_path, env)
    (src / "css" / "c.css").unlink()  # really deleted: its deletion goes through
    res = transport(args, env, jsonl([event(src, "css/a.css", "deleted"), event(src, "css/c.css", "deleted")]))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (dest / "css").iterdir()) == ["a.css", "b.css"]
    assert [(e["rel"], e.get("transported")) for e in lines(res.stdout)] == [("css/c.css", "deleted")]
    assert b"css/a.css" in res.stderr and b"still at the source" in res.stderr


def test_a_deletion_from_a_source_not_given_deletes_nothing(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, dest, args = _setup(tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forged = [
        {**event(elsewhere, "css/a.css", "deleted"), "source": "site"},  # another root under the name site
        {**event(src, "css/b.css", "deleted"), "source": "other"},  # another source name with site's root
        {"v": 1, "kind": "deleted", "path": str(src / "css/b.css"), "rel": "css/b.css"},  # no root at all
    ]
    res = transport(args, env, jsonl(forged))
    assert res.returncode == 1, res.stderr  # refused, as an upload from there would be
    assert sorted(p.name for p in (dest / "css").iterdir()) == ["a.css", "b.css", "c.css"]
    out = lines(res.stdout)
    assert len(out) == 3 and all(e.get("error_kind") == "permanent" for e in out), out
