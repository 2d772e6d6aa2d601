"""The issue's "done when", as a user runs it: real commands in real shell pipelines, a real HTTP server."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import quote

from tests.conftest import ROOT, require_tool
from tests.record.conftest import BIN

SITE = ROOT / "examples" / "site"


def sh(script: str, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FC_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_done_when(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    sqlite = require_tool("sqlite3")
    require_tool("jq")
    sh(
        f"fc-watch --scan-once {SITE} | fc-transport --to file://{cdn} --url {base} | fc-record --db synced_files.db",
        tmp_path,
    )

    # the database as the seed describes it, through the sqlite3 shell
    rows = sh(f"{sqlite} synced_files.db 'SELECT * FROM synced_files'", tmp_path).stdout.splitlines()
    expected = files_of(SITE)
    assert len(rows) == len(expected)
    seed = sorted(r.split("|")[:4] for r in rows)
    want = [[str(SITE / rel), rel.rsplit("/", 1)[-1], base + quote(rel), "file"] for rel in expected]
    assert seed == sorted(want)
    assert files_of(cdn) == expected

    # fc-verify: all well, then a damaged destination
    assert "11 ok" in sh("fc-verify --db synced_files.db", tmp_path).stderr
    (cdn / "misc" / "drupal.js").unlink()
    truncated = cdn / "modules" / "system" / "system.css"
    truncated.write_bytes(truncated.read_bytes()[:5])
    (cdn / "extra.txt").write_text("not from us\n")
    out = sh("fc-verify --db synced_files.db", tmp_path, check=False)
    assert out.returncode == 1
    found = sorted(line for line in out.stdout.splitlines())
    assert (
        len(found) == 2 and '"problem":"missing"' in found[1] + found[0] and '"problem":"different"' in "".join(found)
    )
    assert "misc/drupal.js" in out.stdout and "modules/system/system.css" in out.stdout
    assert "9 ok, 1 missing, 1 different" in out.stderr

    # --repair | fc-transport | fc-record heals it
    sh(
        f"fc-verify --db synced_files.db --repair | fc-transport --to file://{cdn} --url {base} "
        "--record-db synced_files.db | fc-record --db synced_files.db > /dev/null; "
        's=(${PIPESTATUS[@]}); [ "${s[*]}" = "1 0 0" ]',  # fc-verify still says it found problems
        tmp_path,
    )
    assert sh("fc-verify --db synced_files.db", tmp_path).stdout == ""
    assert (cdn / "misc" / "drupal.js").read_bytes() == (SITE / "misc" / "drupal.js").read_bytes()
    assert truncated.read_bytes() == (SITE / "modules" / "system" / "system.css").read_bytes()


def test_source_deletion_is_not_propagated_across_processes(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    require_tool("jq")
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    pipeline = (
        f"fc-watch --scan-once --ignore-dirs CVS site | fc-filter --extensions css:js "
        f"| fc-transport --to file://{cdn} --url {base} --record-db synced.db "
        "| fc-record --db synced.db --source site=site --delete-source-after 0 --require-server file --drain-timeout 10"
    )
    sh(pipeline, tmp_path)
    css_js = [p for p in files_of(SITE) if p.endswith((".css", ".js")) and not p.startswith("CVS")]
    assert css_js and files_of(cdn) == css_js
    # only this rule's files went: the css and js, no other file of the source
    assert files_of(site) == [p for p in files_of(SITE) if p not in css_js]

    # the next scan reports those deletions; fc-transport keeps the remote copies, fc-record keeps the rows
    out = sh(pipeline + " | jq -c '[.kind, .transported]'", tmp_path).stdout.splitlines()
    assert out and set(out) == {'["deleted","kept"]'}
    assert files_of(cdn) == css_js
    con = sqlite3.connect(tmp_path / "synced.db")
    assert con.execute("SELECT count(*) FROM synced_files").fetchone() == (len(css_js),)
    sh("fc-verify --db synced.db", tmp_path)  # exit 0: nothing stale, nothing missing

    # a file fc-record deleted, recreated by the user, synced, then deleted by the user: that deletion is theirs
    # and reaches the destination
    plain = (
        f"fc-watch --scan-once --ignore-dirs CVS site | fc-filter --extensions css:js "
        f"| fc-transport --to file://{cdn} --url {base} --record-db synced.db | fc-record --db synced.db "
        "| jq -c '[.kind, .rel, .transported]'"
    )
    (site / "misc" / "drupal.js").write_text("/* new */\n")
    assert sh(plain, tmp_path).stdout.splitlines() == ['["created","misc/drupal.js","uploaded"]']
    assert (cdn / "misc" / "drupal.js").read_text() == "/* new */\n"
    (site / "misc" / "drupal.js").unlink()
    assert sh(plain, tmp_path).stdout.splitlines() == ['["deleted","misc/drupal.js","deleted"]']
    assert not (cdn / "misc" / "drupal.js").exists()
    assert con.execute("SELECT count(*) FROM synced_files").fetchone() == (len(css_js) - 1,)
