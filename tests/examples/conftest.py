"""Helpers for running the functions of examples/pipelines.sh as a user would: bash, the checkout's bin/ on
PATH (the script puts it there), and this interpreter's python3 first, so the launchers find our packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "examples" / "pipelines.sh"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the demo site, so tests may change it."""
    d = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "site", d)
    return d


def example_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an example: state files in the test's directory, our python3 on PATH."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "FC_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return example_env(tmp_path)


def example(name: str, *args: str | Path, env: dict[str, str], timeout: float = 120) -> list[dict]:
    """Run one function of pipelines.sh to the end; its stdout as events."""
    out = subprocess.run(["bash", str(SCRIPT), name, *map(str, args)], capture_output=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr.decode()
    return [json.loads(line) for line in out.stdout.splitlines()]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def site_files(site: Path, *extensions: str) -> set[str]:
    """The demo site's files (CVS/ left out, as --ignore-dirs CVS:.svn does), relative, optionally by extension."""
    return {
        p.relative_to(site).as_posix()
        for p in site.rglob("*")
        if p.is_file() and "CVS" not in p.parts and (not extensions or p.suffix.lower() in extensions)
    }


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()
