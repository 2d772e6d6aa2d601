"""bin/fc-* under an interpreter without File Conveyor's packages: one message and exit 3, never a traceback;
in a checkout with its .venv, the launchers use it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fileconveyor import launch
from tests.conftest import ROOT

COMMANDS = sorted(p.name for p in (ROOT / "bin").glob("fc-*"))


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment without any package: what `python3` is on a new machine."""
    d = tmp_path_factory.mktemp("bare")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(d / "venv")], check=True)
    return d / "venv" / "bin" / "python"


def checkout(tmp_path: Path, with_venv: bool) -> Path:
    """A checkout of our bin/ and lib/ in tmp_path, with or without a .venv (the one running these tests)."""
    (tmp_path / "bin").mkdir()
    for name in COMMANDS:
        shutil.copy2(ROOT / "bin" / name, tmp_path / "bin" / name)
    (tmp_path / "lib").symlink_to(ROOT / "lib")
    if with_venv:
        (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "FC_LAUNCHED_FROM_CHECKOUT"}
    return {**env, "PYTHONNOUSERSITE": "1"}


@pytest.mark.parametrize("command", COMMANDS)
def test_launcher_without_packages_says_what_to_do(tmp_path: Path, bare_python: Path, command: str) -> None:
    co = checkout(tmp_path, with_venv=False)
    src = tmp_path / "src"
    src.mkdir()
    res = subprocess.run(
        [str(bare_python), str(co / "bin" / command), str(src)], capture_output=True, text=True, env=bare_env()
    )
    assert res.returncode == 3, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"{command}: error: this Python ({bare_python}")
    assert "make deps" in lines[0] and "pip install ." in lines[0]
    assert str(co / ".venv" / "bin" / command) in lines[0]
    assert "Pillow" in lines[0] and "Traceback" not in res.stderr


def test_launcher_uses_the_checkouts_venv(tmp_path: Path, bare_python: Path) -> None:
    co = checkout(tmp_path, with_venv=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.css").write_text("a{}")
    env = {**bare_env(), "FC_STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run(
        [str(bare_python), str(co / "bin" / "fc-watch"), "--scan-once", str(src)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert '"rel":"a.css"' in res.stdout
    # run through the shebang, as a user does, with the bare python first on PATH
    env["PATH"] = f"{bare_python.parent}{os.pathsep}{env['PATH']}"
    res = subprocess.run([str(co / "bin" / "fc-filter"), "--version"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "fc-filter" in res.stdout, res.stderr


def test_required_table_matches_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python 3.11+

        deps = tomllib.loads(text)["project"]["dependencies"]
    except ImportError:  # Python 3.10: the list's quoted entries, which is all this test needs
        block = text.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
        deps = re.findall(r'^\s*"([^"]+)"', block, re.M)
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in deps}
    assert names == {dist.lower() for _, dist, _ in launch.REQUIRED}


def test_missing_finds_nothing_missing_here() -> None:
    assert launch.missing() == []


def test_a_launcher_imports_nothing_more_before_it_re_executes() -> None:
    """The first interpreter of a launcher run by another Python only decides where to go: what launch.py
    imports at the top (nothing beyond os and sys) is paid once more by every stage started that way."""

    def modules(code: str) -> set[str]:
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
            timeout=30,
            check=True,
        )
        lines = [line for line in p.stderr.splitlines() if re.match(r"import time: +\d", line)]
        return {line.rsplit("|", 1)[1].strip() for line in lines}

    added = modules("import fileconveyor.launch") - modules("pass")
    assert added <= {"fileconveyor", "fileconveyor.launch", "__future__"}, added


def _entry_points() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("\n[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r'^(fc-[a-z]+) = "([^"]+)"$', block, re.M))


def test_every_command_has_an_entry_point() -> None:
    assert sorted(_entry_points()) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_an_installed_entry_point_runs_its_command_and_skips_the_teardown(command: str) -> None:
    """What pip installs as fc-x calls the target named in pyproject.toml: it must run fc-x (its --version says
    so) and end the process itself, as bin/fc-x does (exit_now), not return to the wrapper's sys.exit."""
    module, attr = _entry_points()[command].split(":")
    code = (
        "import importlib, sys\n"
        f"sys.argv = [{command!r}, '--version']\n"
        f"status = getattr(importlib.import_module({module!r}), {attr!r})()\n"
        "print('returned to the wrapper', status)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{command} (File Conveyor) "), done.stdout
    assert "returned to the wrapper" not in done.stdout
