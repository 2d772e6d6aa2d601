"""link_updater.CSSURLUpdater: every url() form against a real synced_files database."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from fileconveyor.processors import PROCESSORS, ProcessorError, RetryLater, create
from fileconveyor.processors.link_updater import CSSURLUpdater

from ..conftest import require_tool
from .conftest import read, step

FIXTURES = Path(__file__).parent / "fixtures" / "css"
WWW = FIXTURES / "www"
SITE = WWW / "site"
ASSETS = ["img/logo.png", "img/my pic.png", "img/bg.gif", "fonts/f.woff", "css/print.css"]


def synced_db(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A synced_files database as fc-record keeps it (the original's schema)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS synced_files"
        "(input_file text, transported_file_basename text, url text, server text)"
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS file_unique_per_server ON synced_files (input_file, server)")
    db.executemany(
        "INSERT INTO synced_files VALUES (?, ?, ?, ?)",
        [(str(SITE / rel), os.path.basename(rel), url, server) for rel, url, server in rows],
    )
    db.commit()
    db.close()
    return path


def cdn(rel: str, server: str = "cdn") -> tuple[str, str, str]:
    host = "cdn.example.com" if server == "cdn" else "other.example.net"
    return rel, f"https://{host}/site/{rel.replace(' ', '%20')}", server


def options(db: Path, server: str = "cdn", base_path: str = "/site/") -> dict[str, str]:
    return {"document_root": str(WWW), "base_path": base_path, "synced_db": str(db), "server": server}


def test_every_url_form_golden(tmp_path: Path) -> None:
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS] + [cdn(a, "other") for a in ASSETS])
    out, _ = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(db))
    assert out.basename == b"style.css"
    assert read(out.path).decode() == (FIXTURES / "style.expected.css").read_text()
    other, _ = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w2", options=options(db, "other"))
    assert read(other.path) == read(out.path).replace(b"cdn.example.com", b"other.example.net")


def test_not_synced_yet_retries_then_rewrites(tmp_path: Path) -> None:
    """bg.gif is synced to another server only: the CSS waits, then is rewritten once it is there."""
    rows = [cdn(a) for a in ASSETS if a != "img/bg.gif"] + [cdn("img/bg.gif", "other")]
    db = synced_db(tmp_path / "synced.db", rows)
    with pytest.raises(RetryLater, match=r"not synced to server 'cdn' yet: .*/site/img/bg\.gif"):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(db))
    synced_db(db, [cdn("img/bg.gif")])
    out, _ = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(db))
    assert read(out.path).decode() == (FIXTURES / "style.expected.css").read_text()


def test_no_database_yet_means_not_synced(tmp_path: Path) -> None:
    with pytest.raises(RetryLater):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(tmp_path / "none.db"))
    assert not (tmp_path / "none.db").exists()  # read-only: never created


def test_nothing_local_passes_through_byte_for_byte(tmp_path: Path) -> None:
    src = SITE / "css" / "plain.css"
    out, _ = step(CSSURLUpdater(), src, tmp_path / "w", options=options(tmp_path / "none.db"))
    assert out.path == os.fsencode(src)


def test_logical_base_path(tmp_path: Path) -> None:
    """base_path not on disk under document_root (a symlinked "logical" path): the part after it is used."""
    db = synced_db(tmp_path / "synced.db", [cdn("img/bg.gif")])
    opts = {**options(db, base_path="static"), "document_root": str(SITE)}
    out, _ = step(CSSURLUpdater(), SITE / "css" / "logical.css", tmp_path / "w", options=opts)
    assert b"url(https://cdn.example.com/site/img/bg.gif)" in read(out.path)


def test_needs_document_root_and_base_path(tmp_path: Path) -> None:
    with pytest.raises(ProcessorError, match="needs the source's document_root and base_path"):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w")


def test_declared_per_server_and_css_only() -> None:
    cls = PROCESSORS.get("link_updater.CSSURLUpdater")
    assert cls.per_server and cls().applies_to(b"A.CSS")
    assert not cls().applies_to(b"a.cs") and not cls().applies_to(b"css")  # the original's substring bug


def test_css_with_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    site = os.fsencode(tmp_path / "www" / "site")
    os.makedirs(os.path.join(site, b"img"))
    asset = os.path.join(site, b"img", b"caf\xe9.png")
    css = os.path.join(site, b"\xff style.css")
    for path, data in ((asset, b"png"), (css, b".a { background: url('img/caf%E9.png') }")):
        with open(path, "wb") as f:
            f.write(data)
    db = sqlite3.connect(tmp_path / "synced.db")
    db.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    db.execute("INSERT INTO synced_files VALUES (?, 'x.png', 'https://cdn.example.com/x.png', 'cdn')", (asset,))
    db.commit()
    db.close()
    opts = {**options(tmp_path / "synced.db"), "document_root": str(tmp_path / "www")}
    out, _ = step(CSSURLUpdater(), css, tmp_path / "w", options=opts)
    assert read(out.path) == b".a { background: url('https://cdn.example.com/x.png') }"


def test_utf16_stylesheet_fails_the_file(tmp_path: Path) -> None:
    src = tmp_path / "wide.css"
    src.write_bytes("a { background: url(x.png) }".encode("utf-16"))
    with pytest.raises(ProcessorError, match="UTF-16 is not supported"):
        step(CSSURLUpdater(), src, tmp_path / "w", options=options(tmp_path / "none.db"))


# Drupal 7's modules/toolbar/toolbar.css (the declaration cssutils dropped), minified, plus forms a parser
# re-serialises: only the URL tokens may change (issue 17, finding 7).
MINIFIED = (
    b"@import url(print.css) print;#toolbar{background:#666;filter:progid:DXImageTransform.Microsoft.gradient"
    b"(startColorstr='#666', endColorstr='#000')}.x{background:url(../img/logo.png) no-repeat 0 0;*zoom:1}"
    b".y{background-image:url(\"../img/my pic.png\"),url( '../img/bg.gif' )}"
    b'.z:after{content:"url(../img/logo.png)"}@media print{.q{background:URL(../img/logo.png)}}'
)


def test_only_the_url_tokens_change(tmp_path: Path) -> None:
    src = SITE / "css" / "min.css"
    src.write_bytes(MINIFIED)
    try:
        db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS])
        out, _ = step(CSSURLUpdater(), src, tmp_path / "w", options=options(db))
    finally:
        src.unlink()
    u = "https://cdn.example.com/site/"
    expected = (
        MINIFIED.decode()
        .replace("url(print.css)", f"url({u}css/print.css)")
        .replace("url(../img/logo.png) no", f"url({u}img/logo.png) no")
        .replace('"../img/my pic.png"', f'"{u}img/my%20pic.png"')
        .replace("'../img/bg.gif'", f"'{u}img/bg.gif'")
        .replace("URL(../img/logo.png)", f"URL({u}img/logo.png)")
    )
    assert read(out.path).decode() == expected  # the string in content: is no reference


def test_a_utf8_name_written_as_it_is(tmp_path: Path) -> None:
    site = tmp_path / "www" / "site"
    (site / "img").mkdir(parents=True)
    (site / "img" / "café.png").write_bytes(b"png")
    (site / "a.css").write_text(".a{background:url(img/café.png)}/* é */", encoding="utf-8")
    db = sqlite3.connect(tmp_path / "synced.db")
    db.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    row = (str(site / "img" / "café.png"), "https://cdn.example.com/caf%C3%A9.png")
    db.execute("INSERT INTO synced_files VALUES (?, 'café.png', ?, 'cdn')", row)
    db.commit()
    db.close()
    opts = {**options(tmp_path / "synced.db"), "document_root": str(tmp_path / "www")}
    out, ctx = step(CSSURLUpdater(), site / "a.css", tmp_path / "w", options=opts)
    assert read(out.path).decode() == ".a{background:url(https://cdn.example.com/caf%C3%A9.png)}/* é */"
    assert ctx.references == [(os.fsencode(site / "img" / "café.png"), "café.png".encode())]


def test_an_older_version_of_a_reference_is_not_used(tmp_path: Path) -> None:
    """Finding 4: the record row names logo.png's old name while fc-process emitted a new one: wait for it."""
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS])
    logo = os.fsencode(SITE / "img" / "logo.png")
    names = {logo: b"logo_new.png"}
    with pytest.raises(RetryLater, match=r"logo\.png \(its new version logo_new\.png\)"):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(db), names=names)
    names[logo] = b"logo.png"  # the row is the current version: used
    out, _ = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=options(db), names=names)
    assert read(out.path).decode() == (FIXTURES / "style.expected.css").read_text()


def test_a_reference_never_synced_is_left_as_it_was_after_the_wait(tmp_path: Path) -> None:
    """Finding 5: the font is never synced; after reference_wait the stylesheet goes out without it, with a
    warning that names the reference."""
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS if a != "fonts/f.woff"])
    opts = {**options(db), "reference_wait": "30"}
    with pytest.raises(RetryLater, match=r"fonts/f\.woff"):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=opts, waited=29.0)
    out, ctx = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=opts, waited=31.0)
    expected = (FIXTURES / "style.expected.css").read_text()
    expected = expected.replace("https://cdn.example.com/site/fonts/f.woff", "../fonts/f.woff")
    assert read(out.path).decode() == expected
    (note,) = ctx.notes
    assert note.startswith("url(../fonts/f.woff) left as it was: ") and "fonts/f.woff still not synced" in note


def test_minified_by_yui_stays_minified(tmp_path: Path) -> None:
    """Finding 7 on the real tool: after YUI, only the URLs change (cssutils pretty-printed the stylesheet:
    0.7% saved instead of 21%)."""
    require_tool("yui-compressor", "Debian package yui-compressor")
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS])
    yui, _ = step(create("yui_compressor.YUICompressor"), SITE / "css" / "style.css", tmp_path / "y")
    minified = read(yui.path)
    assert b"\n" not in minified.strip()
    src = SITE / "css" / "min-yui.css"  # references resolve from the stylesheet's own directory
    src.write_bytes(minified)
    try:
        out, ctx = step(CSSURLUpdater(), src, tmp_path / "w", options=options(db))
    finally:
        src.unlink()
    text = read(out.path)

    def without_urls(data: bytes) -> bytes:
        return re.sub(rb'url\([^)]*\)|@import\s*"[^"]*"', b"U", data)

    assert without_urls(text) == without_urls(minified) and text != minified
    assert len(set(ctx.references)) == 5  # print.css, logo.png, my pic.png, bg.gif, f.woff
