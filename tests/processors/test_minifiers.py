"""yui_compressor, google_closure_compiler (the real Java tools) and minify.CSS/JS: golden outputs, warnings, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fileconveyor.processors import ProcessorError, create

from ..conftest import require_tool
from .conftest import HOSTILE, read, step

FIXTURES = Path(__file__).parent / "fixtures" / "minify"
YUI = "yui_compressor.YUICompressor"
CLOSURE = "google_closure_compiler.GoogleClosureCompiler"
TOOLS = {
    YUI: ("yui-compressor", "Debian package yui-compressor"),
    CLOSURE: ("closure-compiler", "Debian package closure-compiler"),
}


def need(name: str) -> None:
    if name in TOOLS:
        require_tool(*TOOLS[name])


GOLDEN = [
    ("minify.CSS", "site.css", "site.minify.css"),
    ("minify.JS", "app.js", "app.minify.js"),
    (YUI, "site.css", "site.yui.css"),
    (YUI, "app.js", "app.yui.js"),
    (CLOSURE, "app.js", "app.closure.js"),
]


@pytest.mark.parametrize(("name", "src", "expected"), GOLDEN)
def test_golden(name: str, src: str, expected: str, tmp_path: Path) -> None:
    need(name)
    out, ctx = step(create(name), FIXTURES / src, tmp_path / "w")
    assert out.basename == os.fsencode(src)
    assert read(out.path) == read(FIXTURES / expected)
    assert ctx.notes == []


@pytest.mark.parametrize("name", [YUI, CLOSURE, "minify.JS"])
def test_already_minimal_passes_unchanged(name: str, tmp_path: Path) -> None:
    need(name)
    src = tmp_path / "min.js"
    src.write_bytes(b"var a=1;")
    out, _ = step(create(name), src, tmp_path / "w")
    assert out.path == os.fsencode(src)


@pytest.mark.parametrize("name", [YUI, CLOSURE])
def test_syntax_error_fails_the_file(name: str, tmp_path: Path) -> None:
    need(name)
    with pytest.raises(ProcessorError, match=r"(yui-compressor|closure-compiler) failed \(exit 1\): .*\S"):
        step(create(name), FIXTURES / "broken.js", tmp_path / "w")


@pytest.mark.parametrize("source", [b"var a = {b: 1,,};\n", b"f(1,);\n"])
def test_yui_syntax_error_says_syntax_error_not_a_java_crash(source: bytes, tmp_path: Path) -> None:
    """Debian's YUI dies with MissingResourceException on any syntax error: the user reads
    that the JavaScript is invalid and how to see why, not the missing Java bundle."""
    need(YUI)
    src = tmp_path / "app.js"
    src.write_bytes(source)
    with pytest.raises(ProcessorError) as err:
        step(create(YUI), src, tmp_path / "w")
    text = str(err.value)
    assert "the JavaScript has a syntax error" in text and "closure-compiler --js FILE" in text
    assert "MissingResourceException" not in text and "Can't find bundle" not in text


def test_closure_error_names_the_users_file_not_the_staged_copy(tmp_path: Path) -> None:
    need(CLOSURE)
    src = tmp_path / "my app.js"  # not plain: staged as <work>/step-N-in.js
    src.write_bytes(b"var a = {b: 1,};\n")  # trailing comma: closure's default (ES3) refuses it
    with pytest.raises(ProcessorError) as err:
        step(create(CLOSURE), src, tmp_path / "w")
    text = str(err.value)
    assert "my app.js:1: ERROR - Parse error." in text and "trailing commas" in text
    assert "step-" not in text and str(tmp_path) not in text


def test_closure_warnings_are_notes_not_failures(tmp_path: Path) -> None:
    need(CLOSURE)
    out, ctx = step(create(CLOSURE), FIXTURES / "warning.js", tmp_path / "w")
    assert read(out.path).startswith(b"function f(){}")
    assert len(ctx.notes) == 1 and "1 warning(s)" in ctx.notes[0]


def test_extensions() -> None:
    assert create(CLOSURE).applies_to(b"A.JS") and not create(CLOSURE).applies_to(b"js")
    assert create(YUI).applies_to(b"a.css") and create(YUI).applies_to(b"a.js")
    assert not create("minify.CSS").applies_to(b"a.js")


@pytest.mark.parametrize("name", [YUI, CLOSURE])
def test_hostile_names_through_java_tools(name: str, tmp_path: Path) -> None:
    """Java decodes argv with the locale; staged names keep every name working."""
    need(name)
    src_dir = os.fsencode(tmp_path / "src")
    os.mkdir(src_dir)
    # The closure compiler takes ~2 s a run: one name with a newline, a leading dash and non-UTF-8 bytes.
    stems = HOSTILE if name == YUI else [b'-x "new\nline" caf\xe9 \xff.']
    for stem in stems:
        src = os.path.join(src_dir, stem + b"js")
        shutil.copyfile(FIXTURES / "app.js", src)
        out, _ = step(create(name), src, tmp_path / "w")
        assert out.basename == stem + b"js" and out.path != src
        assert b"addNumbers(2,3)" in read(out.path)
    assert not (Path.cwd() / "pwned").exists()


# What the minifiers broke inside url() (issue 17, finding 7): rcssmin removed the spaces in url("a b.png"),
# so a following link_updater could not find the file; YUI removed those in a quoted SVG data: URI.
SVG = 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><path d="M0 0h8v8z"/></svg>'
URLS_CSS = f""".a {{ background: url("../img/a b.png") no-repeat; }}
.b {{ background-image: url( '{SVG}' ); }}
.c {{ background: url(../img/c.png) }}
.d {{ content: "  kept  "; }}
"""


@pytest.mark.parametrize("name", ["minify.CSS", YUI])
def test_url_tokens_survive_minification(name: str, tmp_path: Path) -> None:
    need(name)
    src = tmp_path / "urls.css"
    src.write_text(URLS_CSS)
    out, _ = step(create(name), src, tmp_path / "w")
    text = read(out.path).decode()
    assert 'url("../img/a b.png")' in text and f"url('{SVG}')" in text and "url(../img/c.png)" in text
    assert len(text) < len(URLS_CSS) - 20 and "\n" not in text.strip()  # still minified
