"""Every pipeline in examples/pipelines.sh runs as written (on a copy of the demo
site), so an example that stops working fails the suite."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

SCRIPT = ROOT / "examples" / "pipelines.sh"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "site", d)
    return d


def run(name: str, site: Path, tmp_path: Path) -> list[str]:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run(["bash", str(SCRIPT), name, str(site)], capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().splitlines()


def rels(lines: list[str]) -> set[str]:
    return {json.loads(line)["rel"] for line in lines}


def all_files(site: Path, with_cvs: bool = False) -> set[str]:
    return {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file() and (with_cvs or "CVS" not in p.parts)}


def test_scan_once_reports_every_file_then_nothing(site: Path, tmp_path: Path) -> None:
    assert rels(run("scan_once", site, tmp_path)) == all_files(site)
    assert run("scan_once", site, tmp_path) == []


def test_awk_stage_in_the_middle(site: Path, tmp_path: Path) -> None:
    got = rels(run("only_css_js", site, tmp_path))  # no --ignore-dirs in this one
    assert got and got == {f for f in all_files(site, with_cvs=True) if f.endswith((".css", ".js"))}


def test_fc_filter_example(site: Path, tmp_path: Path) -> None:
    got = rels(run("css_js_images", site, tmp_path))
    assert got == {f for f in all_files(site) if f.endswith((".css", ".js", ".png", ".jpg", ".gif"))}


def test_paths_loop_prints_exact_names(site: Path, tmp_path: Path) -> None:
    require_tool("jq", "the example reads paths with jq")
    got = set(run("paths", site, tmp_path))
    assert {str(site / f) for f in all_files(site)} <= got


def test_sync_to_folder_the_demo(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    out_dir = tmp_path / "out"
    cmd = ["bash", str(SCRIPT), "sync_to_folder", str(site), str(out_dir)]
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert {e["rel"] for e in events} == all_files(site)
    rows = sqlite3.connect(out_dir / "synced_files.db").execute("SELECT input_file, url FROM synced_files").fetchall()
    assert {r[0] for r in rows} == {str(site / f) for f in all_files(site)}
    for e in events:  # every URL points at a file in the CDN folder, named by its content
        remote = out_dir / "cdn" / e["remote"]
        assert remote.is_file() and e["url"].startswith("http://localhost:8000/")
        assert len(e["name"].rsplit("_", 1)[-1].split(".")[0]) == 32
    css = (out_dir / "cdn" / next(e["remote"] for e in events if e["rel"] == "themes/garland/style.css")).read_bytes()
    assert len(css) < (site / "themes/garland/style.css").stat().st_size  # minified
    # nothing changed: nothing is sent again
    again = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout == b""
