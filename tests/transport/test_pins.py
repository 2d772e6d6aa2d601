"""A superseded name stays while a published stylesheet references it (issue 17, finding 3; transport_pins.py).

The events are what fc-process emits with unique_filename.MD5 and link_updater: a new name per content, and a
stylesheet's ``references`` (the source path and the name of each file it uses)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import work_dir_for

from .conftest import event, jsonl, lines, transport, tree


def _site(tmp_path: Path) -> tuple[Path, Path]:
    src, work = (
        tmp_path / "src",
        tmp_path / "process.db.work",
    )  # a work folder fc-transport sends from (next to --state)
    (src / "img").mkdir(parents=True)
    (src / "css").mkdir()
    work.mkdir()
    (src / "img" / "x.png").write_text("image")
    (src / "css" / "a.css").write_text("css")
    for rel, name in (("img/x.png", "x1"), ("img/x.png", "x2"), ("css/a.css", "a1"), ("css/a.css", "a2")):
        _at(src, work, rel, name, True).write_text(name)
    _at(src, work, "css/b.css", "b1", True).write_text("b1")
    return src, work


def _at(src: Path, work: Path, rel: str, name: str, make: bool = False) -> Path:
    """Work file ``name`` of the event for ``rel``, in the directory fc-process makes for that event."""
    return work_dir_for(work, src / rel, rel, make) / name


def _image(src: Path, work: Path, n: int) -> dict:
    return event(src, "img/x.png", "modified", name=f"x_{n}.png", file=str(_at(src, work, "img/x.png", f"x{n}")))


def _css(src: Path, work: Path, rel: str, n: int, image: int, w: str) -> dict:
    refs = [{"path": str(src / "img" / "x.png"), "name": f"x_{image}.png"}]
    stem = rel.rsplit("/", 1)[1].split(".")[0]
    return event(src, rel, "modified", name=f"{stem}_{n}.css", file=str(_at(src, work, rel, w)), references=refs)


def test_old_name_kept_until_the_stylesheets_using_it_are_published_again(tmp_path: Path, env: dict) -> None:
    src, work = _site(tmp_path)
    (src / "css" / "b.css").write_text("css")
    cdn = tmp_path / "cdn"
    args = ["--to", f"file://{cdn}", "--state", str(tmp_path / "t.db")]
    first = [_image(src, work, 1), _css(src, work, "css/a.css", 1, 1, "a1"), _css(src, work, "css/b.css", 1, 1, "b1")]
    assert transport(args, env, jsonl(first)).returncode == 0
    # the image changes: its old name is referenced by a_1.css and b_1.css, so it stays (it was deleted at once)
    res = transport(args, env, jsonl([_image(src, work, 2)]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_1.png", "img/x_2.png", "css/a_1.css", "css/b_1.css"}
    # a.css published again with the new name: b_1.css still uses x_1.png (a later run: the held row survives)
    res = transport(args, env, jsonl([_css(src, work, "css/a.css", 2, 2, "a2")]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_1.png", "img/x_2.png", "css/a_2.css", "css/b_1.css"}
    # b.css deleted: nothing references x_1.png now, and it goes, reported like any old name
    (src / "css" / "b.css").unlink()
    res = transport(args, env, jsonl([event(src, "css/b.css", "deleted")]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_2.png", "css/a_2.css"}
    gone = [ev for ev in lines(res.stdout) if ev.get("superseded")]
    assert [(ev["remote"], ev["transported"]) for ev in gone] == [("img/x_1.png", "deleted")]


def test_a_stylesheet_made_for_a_deleted_name_is_not_sent(tmp_path: Path, env: dict) -> None:
    """Finding 4's race: fc-process made a.css for x_1.png just before x.png got its new name; x_1.png is gone
    (nothing held it), so that version of a.css is not published; its next version (x_2.png) is."""
    src, work = _site(tmp_path)
    cdn = tmp_path / "cdn"
    args = ["--to", f"file://{cdn}", "--state", str(tmp_path / "t.db")]
    assert transport(args, env, jsonl([_image(src, work, 1), _image(src, work, 2)])).returncode == 0
    res = transport([*args, "-v"], env, jsonl([_css(src, work, "css/a.css", 1, 1, "a1")]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_2.png"}
    assert b"a.css: not sent: it references x_1.png, an old name of" in res.stderr
    res = transport(args, env, jsonl([_css(src, work, "css/a.css", 2, 2, "a2")]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_2.png", "css/a_2.css"}


def test_malformed_references_pin_nothing_and_break_nothing(tmp_path: Path, env: dict) -> None:
    """``references`` is input like any field: one that is not a list of {path, name} is ignored (the stylesheet
    is sent, nothing is pinned), never a crash."""
    src, work = _site(tmp_path)
    cdn = tmp_path / "cdn"
    bad: list[object] = ["x", [{"path": 5, "name": "x_1.png"}], [{"path": str(src / "img/x.png")}], {"a": 1}]
    evs = [
        event(
            src, "css/a.css", "modified", name=f"a_{n}.css", file=str(_at(src, work, "css/a.css", "a1")), references=r
        )
        for n, r in enumerate(bad)
    ]
    res = transport(["--to", f"file://{cdn}", "--state", str(tmp_path / "t.db")], env, jsonl(evs))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"css/a_3.css"}  # each version sent, the old ones replaced at once
