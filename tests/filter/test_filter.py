"""fc-filter: each condition of a rule's <filter>, usage errors, and bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.cli.filter import main
from fileconveyor.errors import Exit
from tests.conftest import call

ROOT = "/srv/www"


def ev(rel: str | bytes, kind: str = "created", size: int | None = 100) -> dict:
    raw = rel if isinstance(rel, bytes) else rel.encode()
    e: dict = {"v": 1, "id": "x", "kind": kind, "source": "site", "root": ROOT}
    E.put_path(e, "path", ROOT.encode() + b"/" + raw)
    E.put_path(e, "rel", raw)
    if kind != "deleted" and size is not None:
        e["size"] = size
    return e


def passed(args: list[str], events: list[dict]) -> list[str]:
    data = b"".join(E.encode(e) for e in events)
    r = call(main, args, data)
    assert r.status == Exit.OK, r.stderr
    return [E.get_path(json.loads(line), "rel").decode("utf-8", "replace") for line in r.stdout.splitlines()]


@pytest.fixture(autouse=True)
def _state(state_dir: Path) -> None:
    pass


def test_paths_match_whole_components_recursively() -> None:
    events = [ev("css/a.css"), ev("css/x/b.css"), ev("precss/c.css"), ev("a/css/d.css"), ev("modules/foo/e.js")]
    assert passed(["--paths", "css:modules/foo"], events) == ["css/a.css", "css/x/b.css", "modules/foo/e.js"]


def test_absolute_paths_entry_compares_with_the_absolute_path() -> None:
    assert passed(["--paths", "/srv/www/css"], [ev("css/a.css"), ev("js/b.js")]) == ["css/a.css"]


def test_absolute_paths_entry_outside_the_source_root_is_named_once() -> None:
    """``--paths /img`` (meaning img under the root) matched nothing, silently: it is named, with the fix."""
    data = b"".join(E.encode(e) for e in [ev("img/a.png"), ev("css/b.css"), ev("img/c.png")])
    r = call(main, ["--paths", "/img:/srv/www/css"], data)
    assert r.status == Exit.OK, r.stderr
    assert [E.get_path(json.loads(line), "rel") for line in r.stdout.splitlines()] == [b"css/b.css"]
    assert r.stderr.count("warning") == 1, r.stderr
    assert "fc-filter: warning: --paths /img: an absolute entry is compared with the absolute path" in r.stderr
    assert "not under this source's root /srv/www" in r.stderr and "did you mean img" in r.stderr
    assert "/srv/www/img?" in r.stderr


def test_extensions_any_case_multipart_and_not_hidden_files() -> None:
    events = [ev("a.css"), ev("B.JPG"), ev("c.tar.gz"), ev("d.gz"), ev(".css"), ev("e.scss"), ev("noext")]
    assert passed(["--extensions", "css:jpg:tar.gz"], events) == ["a.css", "B.JPG", "c.tar.gz"]
    assert passed(["--extensions", "jpg", "--case-sensitive"], events) == []


def test_ignore_dirs_look_at_directory_components_only() -> None:
    events = [ev("CVS/a.css"), ev("x/.svn/b.css"), ev("x/CVS"), ev("ok/c.css")]
    assert passed(["--ignore-dirs", "CVS:.svn"], events) == ["x/CVS", "ok/c.css"]


def test_the_seeds_pattern_works_as_written_and_is_anchored_at_the_start() -> None:
    pattern = r".*/([a-zA-Z\-_ ])+720([a-zA-Z\-_ ])*\.[a-zA-Z]{3}$"
    events = [ev("videos/movie_720.mov"), ev("videos/movie 720 hd.avi"), ev("videos/movie1080.mov"), ev("720.mov")]
    assert passed(["--pattern", pattern], events) == ["videos/movie_720.mov", "videos/movie 720 hd.avi"]
    assert passed(["--pattern", "foo"], [ev("foo.txt")]) == []  # re.match on /srv/www/foo.txt
    assert passed(["--pattern", ".*foo"], [ev("foo.txt")]) == ["foo.txt"]


def test_sizes_are_inclusive_take_suffixes_and_never_block_deletions() -> None:
    events = [ev("small", size=1023), ev("edge", size=1024), ev("big", size=2048 * 1024 + 1), ev("gone", "deleted")]
    assert passed(["--min-size", "1k", "--max-size", "2M"], events) == ["edge", "gone"]


def test_conditions_combine_with_and_and_invert() -> None:
    events = [ev("css/a.css"), ev("css/b.js"), ev("js/c.css")]
    assert passed(["--paths", "css", "--extensions", "css"], events) == ["css/a.css"]
    assert passed(["--paths", "css", "--extensions", "css", "--invert"], events) == ["css/b.js", "js/c.css"]


def test_names_that_are_not_utf8_are_matched_and_passed_exactly() -> None:
    raw = b"img/caf\xe9 \n.png"
    r = call(main, ["--extensions", "png"], E.encode(ev(raw)))
    out = json.loads(r.stdout)
    assert base64.b64decode(out["path_b64"]) == ROOT.encode() + b"/" + raw


def test_unknown_fields_pass_through() -> None:
    e = ev("a.css")
    e["mine"] = {"deep": [1, 2]}
    r = call(main, ["--extensions", "css"], E.encode(e))
    assert json.loads(r.stdout)["mine"] == {"deep": [1, 2]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "a(b"], "not a valid regular expression"),
        (["--extensions", "css::js"], "empty item"),
        (["--extensions", ".css"], "without the dot"),
        (["--paths", "a:b*"], "contains"),
        (["--min-size", "ten"], "not a size"),
        (["--min-size", "2k", "--max-size", "1k"], "nothing would pass"),
    ],
)
def test_invalid_conditions_are_usage_errors_before_reading(args: list[str], message: str) -> None:
    r = call(main, args, b"this is never read\n")
    assert r.status == Exit.USAGE
    assert message in r.stderr and "fc-filter: error:" in r.stderr


def test_bad_lines_are_reported_and_skipped_and_a_torn_last_line_is_never_taken() -> None:
    good = E.encode(ev("a.css"))
    torn = E.encode(ev("b.css")).rstrip(b"\n")
    data = good + b"{not json\n" + b'{"v":9,"kind":"created","path":"/x"}\n' + good + torn
    r = call(main, ["--extensions", "css"], data)
    assert r.status == Exit.EVENTS_FAILED
    assert len(r.stdout.splitlines()) == 2
    assert "input line 2: not valid JSON" in r.stderr
    assert "unsupported event version 9" in r.stderr
    assert "incomplete last line" in r.stderr
