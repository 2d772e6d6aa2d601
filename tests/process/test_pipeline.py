"""fc-process as a user runs it: real processes from bin/, pipes, kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from fileconveyor.processors.image_optimizer import sniff
from tests.conftest import ROOT, require_tool

from .conftest import content, event, launcher, lines, run_shell_pipeline, subprocess_env


def test_done_when_pipeline_on_the_example_site(tmp_path: Path) -> None:
    for tool in ("jpegtran", "optipng", "gifsicle"):
        require_tool(tool)
    site = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "site", site)
    script = (
        f"{ROOT}/bin/fc-watch --scan-once site | {ROOT}/bin/fc-filter --extensions css:js:png:jpg:gif"
        f" | {ROOT}/bin/fc-process --chain image_optimizer.Max,unique_filename.MD5"
    )
    res = run_shell_pipeline(script, tmp_path, subprocess_env(tmp_path / "state"))
    assert res.returncode == 0, res.stderr.decode()
    evs = [json.loads(line) for line in res.stdout.splitlines()]
    wanted = sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*") if p.suffix in (".css", ".js", ".png", ".jpg", ".gif")
    )
    assert sorted(e["rel"] for e in evs) == wanted
    for ev in evs:
        out = ev.get("file", ev["path"])
        stem, ext = os.path.splitext(ev["name"])
        assert stem.rsplit("_", 1)[1] == hashlib.md5(content(out)).hexdigest()
        kind = sniff(out.encode())
        if kind:  # the extension says what the content is
            assert ext == {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif"}[kind]
            with Image.open(out) as a, Image.open(ev["path"]) as b:
                assert a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()
    assert any("file" in e for e in evs)
    # a second run: nothing changed, nothing to do
    again = run_shell_pipeline(script, tmp_path, subprocess_env(tmp_path / "state"))
    assert again.returncode == 0 and again.stdout == b"", again.stderr.decode()


def test_kill_9_then_restart_gives_every_event(tmp_path: Path) -> None:
    """Events come from fc-filter (with hops, so replays are dropped): what fc-process
    had taken but not emitted when killed must come from its own state."""
    src = tmp_path / "src"
    src.mkdir()
    evs = []
    for i in range(40):
        p = src / f"f{i:02d}.txt"
        p.write_text(f"file {i}\n")
        evs.append(event(p, id=f"{i:032x}"))
    (tmp_path / "raw.jsonl").write_bytes(lines(evs))
    env = subprocess_env(tmp_path / "state")
    filt = subprocess.run(
        [*launcher("fc-filter"), "--input", "raw.jsonl", "--output", "filtered.jsonl", "--state", "f.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert filt.returncode == 0, filt.stderr
    out = tmp_path / "out.jsonl"
    argv = [
        *launcher("fc-process"),
        "--processor", "cmd:sh -c 'sleep 0.15; cat \"$1\"' sh {in}",
        "--input", "filtered.jsonl", "--output", str(out), "--state", "p.db", "--jobs", "2", "-v",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while (not out.exists() or out.read_bytes().count(b"\n") < 6) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = out.read_bytes().count(b"\n")
    assert 6 <= first < 40, "killed too late to test anything"
    res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert b"resuming" in res.stderr  # the events taken before the kill came back from the state file
    got = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert {e["id"] for e in got} == {e["id"] for e in evs}  # duplicates allowed, loss not
    for ev in got:
        assert content(ev["file"]).decode() == content(ev["path"]).decode()


@pytest.mark.parametrize("cmd", ["fc-process"])
def test_help_names_per_server_rule(cmd: str) -> None:
    res = subprocess.run([*launcher(cmd), "--help"], capture_output=True, text=True, timeout=60)
    assert "run one fc-process per destination" in res.stdout


def test_a_long_but_moving_end_is_not_try_again_later(tmp_path: Path) -> None:
    """Issue 17, finding 6: fc-process busy far longer than --drain-timeout after its input ended (YUI and
    Closure on a first run) used to exit 4, "try again later", although every event was delivered: the drain
    timeout counted from the end of the input.  It counts from the last progress now."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(10):
        (site / f"f{i}.css").write_text(f"a{i}{{b:c}}\n")
    # 10 files at >= 0.5 s each keep fc-process busy >= 5 s after its input ended, well past the 3 s drain timeout,
    # while each step of progress comes far sooner than 3 s even on a loaded 2-core machine (2 s was not enough).
    slow = shlex.quote("cmd:sh -c 'sleep 0.5; cat \"$1\"' sh {in}")
    drain = "--drain-timeout 3"
    script = (
        f"{ROOT}/bin/fc-watch --scan-once site | {ROOT}/bin/fc-filter {drain}"
        f" | {ROOT}/bin/fc-process --jobs 1 {drain} --processor {slow}"
        f' | {ROOT}/bin/fc-transport {drain} --to file://{tmp_path}/cdn; echo "${{PIPESTATUS[@]}}" >&2'
    )
    res = run_shell_pipeline(script, tmp_path, subprocess_env(tmp_path / "state"))
    err = res.stderr.decode()
    assert err.splitlines()[-1] == "0 0 0 0", err  # every stage: done, nothing left for later
    assert sorted(p.name for p in (tmp_path / "cdn").iterdir()) == sorted(f"f{i}.css" for i in range(10))
