"""link_updater.CSSURLUpdater inside fc-process: a CSS file whose references are not
synced yet is deferred and rewritten once they are, never failed and never lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.processors.test_link_updater import ASSETS, FIXTURES, SITE, WWW, cdn, synced_db

from .conftest import content, event, file_of, outputs, run

STYLE = SITE / "css" / "style.css"
EXPECTED = (FIXTURES / "style.expected.css").read_text()


def flags(db: Path, *extra: str) -> list[str]:
    return ["--chain", "link_updater.CSSURLUpdater", "--server", "cdn", "--record-db", str(db), *extra]


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
