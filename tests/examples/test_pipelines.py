"""Every pipeline in examples/pipelines.sh runs as written (on a copy of the demo
site), so an example that stops working fails the suite."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import unquote

from tests.conftest import require_tool

from .conftest import SCRIPT, example, example_env, site_files, tree


def run(name: str, site: Path, tmp_path: Path) -> list[str]:
    env = example_env(tmp_path)
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


WEB_ASSETS = (".css", ".js", ".png", ".jpg", ".gif")


def test_sync_to_folder_the_demo(site: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """`make demo`: only web assets are published, under their unique names, and every url() and @import in
    the published CSS points at a published file (the CSS is rewritten after the images it references)."""
    out_dir = tmp_path / "out"
    cmd = ["bash", str(SCRIPT), "sync_to_folder", str(site), str(out_dir)]
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assets = {f for f in all_files(site) if f.endswith(WEB_ASSETS)}
    assert {e["rel"] for e in events} == assets and "index.php" not in assets
    cdn = out_dir / "cdn"
    published = {p.relative_to(cdn).as_posix() for p in cdn.rglob("*") if p.is_file()}
    assert not any(p.endswith((".php", ".txt")) for p in published), published
    rows = sqlite3.connect(out_dir / "synced_files.db").execute("SELECT input_file, url FROM synced_files").fetchall()
    assert {r[0] for r in rows} == {str(site / f) for f in assets}
    for e in events:  # every URL points at a file in the CDN folder, named by its content
        remote = cdn / e["remote"]
        assert remote.is_file() and e["url"].startswith("http://localhost:8000/")
        assert len(e["name"].rsplit("_", 1)[-1].split(".")[0]) == 32
    refs = []
    for e in events:
        if e["rel"].endswith(".css"):
            text = (cdn / e["remote"]).read_text()
            refs += re.findall(r"url\(\s*['\"]?([^'\")]+)", text)
    assert len(refs) == 4  # style.css: an @import, two images of its theme and /misc/druplicon.png
    for ref in refs:
        assert ref.startswith("http://localhost:8000/"), ref
        assert unquote(ref.removeprefix("http://localhost:8000/")) in published, ref
    style = next(e["remote"] for e in events if e["rel"] == "themes/garland/style.css")
    assert "/*" in (site / "themes/garland/style.css").read_text() and "/*" not in (cdn / style).read_text()
    system = next(e["remote"] for e in events if e["rel"] == "modules/system/system.css")
    assert (cdn / system).stat().st_size < (site / "modules/system/system.css").stat().st_size  # minified
    # nothing changed: nothing is sent again
    again = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout == b""


def test_cron_sync_sends_only_what_changed(site: Path, tmp_path: Path, env: dict[str, str]) -> None:
    cdn, db = tmp_path / "cdn", tmp_path / "synced_files.db"
    env = {**env, "FC_DB": str(db), "FC_URL": "https://cdn.example/"}
    first = example("cron_sync", site, f"file://{cdn}", env=env)
    assert {e["rel"] for e in first} == site_files(site) == tree(cdn)
    assert all(e["transported"] == "uploaded" for e in first)
    sent = {p: p.stat().st_mtime_ns for p in cdn.rglob("*") if p.is_file()}
    assert example("cron_sync", site, f"file://{cdn}", env=env) == []  # the next run: nothing changed, nothing sent
    assert {p: p.stat().st_mtime_ns for p in cdn.rglob("*") if p.is_file()} == sent
    touched = site / "misc" / "drupal.js"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (third,) = example("cron_sync", site, f"file://{cdn}", env=env)
    assert (third["rel"], third["kind"], third["transported"]) == ("misc/drupal.js", "modified", "uploaded")
    assert third["url"] == "https://cdn.example/misc/drupal.js"
    assert sqlite3.connect(db).execute("SELECT count(*) FROM synced_files").fetchone()[0] == len(first)


def test_fan_out_with_tee_feeds_both_rules(site: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "out"
    events = example("fan_out", site, out, env=env)
    css_js, images = site_files(site, ".css", ".js"), site_files(site, ".png", ".jpg", ".gif")
    assert css_js and images
    assert tree(out / "css-js") == css_js and tree(out / "images") == images
    assert sorted(e["rel"] for e in events) == sorted(css_js | images)  # each file once, by its rule's branch
    style = (out / "css-js" / "themes/garland/style.css").read_bytes()
    assert len(style) < (site / "themes/garland/style.css").stat().st_size  # the CSS branch's processor ran
    rows = sqlite3.connect(out / "synced_files.db").execute("SELECT input_file, url FROM synced_files").fetchall()
    assert {os.path.relpath(r[0], site) for r in rows} == css_js | images
    # The stage after each branch's fc-filter acknowledged fc-watch itself, for everything (tee and fc-filter pass
    # "hop" through; fc-filter marks the lines it dropped at the end) ...
    (watch_state,) = (tmp_path / "state").glob("watch-*.db")
    with sqlite3.connect(watch_state) as w:
        last = w.execute("SELECT max(batch) FROM files").fetchone()[0]
        acks = w.execute("SELECT reader, seq FROM acks").fetchall()
    assert sorted(Path(r).name.split("-")[0] for r, _ in acks) == ["process", "transport"]
    assert all(seq == last for _, seq in acks), (acks, last)
    # ... so the next run sends nothing, on either branch.
    assert example("fan_out", site, out, env=env) == []
    (site / "misc" / "new.js").write_bytes(b"var  x = 1;\n")
    (site / "misc" / "new.png").write_bytes((site / "misc" / "druplicon.png").read_bytes())
    again = example("fan_out", site, out, env=env)
    assert sorted((e["rel"], e["url"]) for e in again) == [
        ("misc/new.js", "http://localhost:8000/css-js/misc/new.js"),
        ("misc/new.png", "http://localhost:8000/images/misc/new.png"),
    ]
