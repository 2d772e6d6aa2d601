"""Every command explains itself: --help works, shows an example, and every option
is documented in the README (a new option without docs fails here)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMMANDS = sorted(p.name for p in (ROOT / "bin").glob("fc-*"))


def _module(cmd: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"fileconveyor.cli.{cmd.removeprefix('fc-').replace('-', '_')}")


def test_there_are_commands() -> None:
    assert "fc-watch" in COMMANDS


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_runs_from_the_launcher(cmd: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / cmd), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {cmd}")
    assert "example" in out.stdout and "exit status" in out.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_option_is_in_the_readme(cmd: str) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {cmd}", 1)
    assert len(section) == 2, f"README.md has no '## {cmd}' section"
    text = section[1].split("\n## ", 1)[0]
    parser = _module(cmd).build_parser()
    missing = [
        opt
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"\b", text)
    ]
    assert not missing, f"options of {cmd} missing from its README section: {missing}"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_flag_is_a_usage_error(cmd: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / cmd), "--no-such-flag"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert f"{cmd}: error:" in out.stderr and "Traceback" not in out.stderr
