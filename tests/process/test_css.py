"""link_updater.CSSURLUpdater inside fc-process: a CSS file whose references are not
synced yet is deferred and rewritten once they are, never failed and never lost."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from tests.processors.test_link_updater import ASSETS, FIXTURES, SITE, WWW, cdn, synced_db

from .conftest import content, event, file_of, outputs, run

STYLE = SITE / "css" / "style.css"
EXPECTED = (FIXTURES / "style.expected.css").read_text()


def flags(db: Path, *extra: str) -> list[str]:
    return ["--chain", "link_updater.CSSURLUpdater", "--server", "cdn", "--record-db", str(db), *extra]


def synced_as(db: Path, source: Path, name: str) -> str:
    """``source`` synced to server 'cdn' as ``name`` (the only row): fc-record's part; its URL."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS synced_files(input_file, transported_file_basename, url, server)")
    conn.execute("DELETE FROM synced_files")
    conn.execute("INSERT INTO synced_files VALUES (?, ?, ?, 'cdn')", (str(source), name, f"https://cdn/{name}"))
    conn.commit()
    conn.close()
    return f"https://cdn/{name}"


def test_deferred_then_rewritten_in_the_same_run(tmp_path: Path) -> None:
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS if a != "img/bg.gif"])
    later = threading.Timer(0.8, lambda: synced_db(db, [cdn("img/bg.gif")]))  # fc-record syncs it meanwhile
    later.start()
    t0 = time.monotonic()
    argv = flags(db, "--document-root", str(WWW), "--base-path", "/site/", "--retry-delay", "0.2", "-v")
    res = run(tmp_path, argv, [event(STYLE, root=SITE)])
    later.join()
    assert res.status == 0, res.stderr
    assert time.monotonic() - t0 >= 0.8
    assert "not synced to server 'cdn' yet" in res.stderr and "bg.gif" in res.stderr
    (ev,) = outputs(res)
    assert content(file_of(ev)).decode() == EXPECTED
    assert ev["name"] == "style.css" and ev["processed"] == ["link_updater.CSSURLUpdater"]


def test_still_missing_at_the_end_stays_queued_for_the_next_run(tmp_path: Path) -> None:
    """Event fields give the document root and base path here (a source can say where it is served)."""
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS if a != "fonts/f.woff"])
    ev = event(STYLE, root=SITE, document_root=str(WWW), base_path="/site/")
    argv = flags(db, "--retry-delay", "0.1", "--drain-timeout", "0.5")
    res = run(tmp_path, argv, [ev])
    assert res.status == 4, res.stderr  # try again later: the event waits in the state file
    assert outputs(res) == []
    synced_db(db, [cdn("fonts/f.woff")])
    res = run(tmp_path, argv, b"")  # no new input: the queued event is retried and goes out
    assert res.status == 0, res.stderr
    (out,) = outputs(res)
    assert content(file_of(out)).decode() == EXPECTED


def test_other_server_gets_its_own_urls(tmp_path: Path) -> None:
    rows = [cdn(a) for a in ASSETS] + [cdn(a, "other") for a in ASSETS]
    db = synced_db(tmp_path / "synced.db", rows)
    base = ["--document-root", str(WWW), "--base-path", "/site/"]
    a = outputs(run(tmp_path / "a", flags(db, *base), [event(STYLE)]))
    argv = ["--chain", "link_updater.CSSURLUpdater", "--server", "other", "--record-db", str(db), *base]
    b = outputs(run(tmp_path / "b", argv, [event(STYLE)]))
    text_a, text_b = content(file_of(a[0])).decode(), content(file_of(b[0])).decode()
    assert text_a == EXPECTED and text_b == EXPECTED.replace("cdn.example.com", "other.example.net")


def test_a_reference_never_synced_is_left_as_it_was_after_the_wait(tmp_path: Path) -> None:
    """Finding 5: a font no rule syncs held the stylesheet for ever (exit 4 on every run, silent).  After
    --reference-wait the stylesheet goes out with that reference as it was, and a warning names both."""
    db = synced_db(tmp_path / "synced.db", [cdn(a) for a in ASSETS if a != "fonts/f.woff"])
    base = ["--document-root", str(WWW), "--base-path", "/site/", "--retry-delay", "0.1"]
    res = run(tmp_path, flags(db, *base, "--reference-wait", "0.5", "--drain-timeout", "20"), [event(STYLE)])
    assert res.status == 0, res.stderr
    (out,) = outputs(res)
    expected = EXPECTED.replace("https://cdn.example.com/site/fonts/f.woff", "../fonts/f.woff")
    assert content(file_of(out)).decode() == expected
    warning = [ln for ln in res.stderr.splitlines() if "left as it was" in ln]
    assert len(warning) == 1 and "warning" in warning[0], res.stderr
    assert (
        "style.css" in warning[0] and "url(../fonts/f.woff)" in warning[0] and "f.woff still not synced" in warning[0]
    )


def test_many_stylesheets_at_once_on_many_threads(tmp_path: Path) -> None:
    """Finding 11: cssutils is not thread-safe; fc-process runs --jobs chains on threads, and stylesheets failed
    at random ("cannot parse the stylesheet").  60 stylesheets at --jobs 4, three times: every one rewritten."""
    www = tmp_path / "www"
    site = www / "site"
    (site / "img").mkdir(parents=True)
    rows = []
    for i in range(12):
        (site / "img" / f"i{i}.png").write_bytes(b"png%d" % i)
        rows.append((f"img/i{i}.png", f"https://cdn.example.com/site/img/i{i}_x.png", "cdn"))
    sheets = []
    for n in range(60):
        css = site / f"s{n}.css"
        body = "".join(
            f'@media screen{{.r{n}_{k}{{background:url("img/i{(n + k) % 12}.png") no-repeat;color:#{k}{k}{k}}}}}\n'
            f"@font-face{{font-family:f{k};src:url(img/i{k % 12}.png?#iefix) format('embedded-opentype')}}\n"
            f".c{k}{{filter:progid:DXImageTransform.Microsoft.gradient(startColorstr='#666', endColorstr='#000')}}\n"
            for k in range(40)
        )
        css.write_text(body)
        sheets.append(css)
    db = sqlite3.connect(tmp_path / "synced.db")
    db.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    db.executemany("INSERT INTO synced_files VALUES (?, ?, ?, ?)", [(str(site / r), r, u, s) for r, u, s in rows])
    db.commit()
    db.close()
    argv = flags(tmp_path / "synced.db", "--document-root", str(www), "--base-path", "/site/")
    for attempt in range(3):
        res = run(tmp_path / f"run{attempt}", argv, [event(css, root=site) for css in sheets], jobs=4)
        assert res.status == 0, res.stderr
        outs = outputs(res)
        assert len(outs) == 60 and not [o for o in outs if "error" in o]
        for out in outs:
            text = content(file_of(out)).decode()
            assert text.count("https://cdn.example.com/site/img/") == 80 and "url(img/" not in text
            assert text.count("filter:progid:DXImageTransform") == 40  # finding 7: cssutils dropped them


def test_a_renamed_image_makes_its_stylesheets_processed_again(tmp_path: Path) -> None:
    """Finding 3: a changed image got a new name (unique_filename.MD5) but the stylesheets that use it were not
    processed again, and pointed at its deleted old name.  Now fc-process queues them, and they wait for the new
    name to be synced before they go out."""
    www = tmp_path / "www"
    (www / "img").mkdir(parents=True)
    logo, css = www / "img" / "logo.png", www / "a.css"
    logo.write_bytes(b"logo 1")
    css.write_text(".a{background:url(img/logo.png)}")
    db = tmp_path / "synced.db"

    def synced(data: bytes) -> str:  # what fc-transport and fc-record do with fc-process's output
        return synced_as(db, logo, f"logo_{hashlib.md5(data).hexdigest()}.png")

    first_url = synced(b"logo 1")
    argv = ["--chain", "unique_filename.MD5,link_updater.CSSURLUpdater", "--server", "cdn", "--record-db", str(db)]
    argv += ["--document-root", str(www), "--base-path", "/", "--retry-delay", "0.1"]
    res = run(tmp_path, argv, [event(logo, root=www), event(css, root=www)])
    assert res.status == 0, res.stderr
    out = {ev["rel"]: ev for ev in outputs(res)}
    assert content(file_of(out["a.css"])).decode() == f".a{{background:url({first_url})}}"
    assert out["a.css"]["references"] == [{"path": str(logo), "name": first_url.rsplit("/", 1)[1]}]
    logo.write_bytes(b"logo 2")  # only the image changes
    later = threading.Timer(0.6, synced, (b"logo 2",))  # its new name is synced meanwhile
    later.start()
    res = run(tmp_path, argv, [event(logo, root=www, kind="modified")])
    later.join()
    assert res.status == 0, res.stderr
    out = {ev["rel"]: ev for ev in outputs(res)}
    assert set(out) == {"img/logo.png", "a.css"}
    new_url = f"https://cdn/logo_{hashlib.md5(b'logo 2').hexdigest()}.png"
    assert content(file_of(out["a.css"])).decode() == f".a{{background:url({new_url})}}"
    assert out["a.css"]["kind"] == "modified" and out["a.css"]["name"].startswith("a_")


def test_an_image_renamed_in_the_main_thread_makes_its_stylesheets_processed_again(tmp_path: Path) -> None:
    """As above with unique_filename.Mtime, a name-only step: the image needs no work directory and is decided
    in the main thread, which must keep the reference graph all the same."""
    www = tmp_path / "www"
    (www / "img").mkdir(parents=True)
    logo, css = www / "img" / "logo.png", www / "a.css"
    logo.write_bytes(b"logo")
    css.write_text(".a{background:url(img/logo.png)}")
    db = tmp_path / "synced.db"

    def synced(mtime: int) -> str:  # the image's new name reaches the destination (fc-transport, fc-record)
        os.utime(logo, (mtime, mtime))
        return synced_as(db, logo, f"logo_{mtime}.png")

    first_url = synced(1_000_000_000)
    argv = ["--chain", "unique_filename.Mtime,link_updater.CSSURLUpdater", "--server", "cdn", "--record-db", str(db)]
    argv += ["--document-root", str(www), "--base-path", "/", "--retry-delay", "0.1"]
    res = run(tmp_path, argv, [event(logo, root=www), event(css, root=www)])
    assert res.status == 0, res.stderr
    out = {ev["rel"]: ev for ev in outputs(res)}
    assert out["img/logo.png"]["name"] == "logo_1000000000.png" and "file" not in out["img/logo.png"]
    assert content(file_of(out["a.css"])).decode() == f".a{{background:url({first_url})}}"
    new_url = synced(2_000_000_000)  # only the image changes: a new name
    res = run(tmp_path, argv, [event(logo, root=www, kind="modified")])
    assert res.status == 0, res.stderr
    out = {ev["rel"]: ev for ev in outputs(res)}
    assert set(out) == {"img/logo.png", "a.css"}
    assert out["img/logo.png"]["name"] == "logo_2000000000.png"
    assert content(file_of(out["a.css"])).decode() == f".a{{background:url({new_url})}}"
