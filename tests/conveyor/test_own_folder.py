"""A symlink_or_copy server whose folder is a rule's source, or a folder inside it that the rule takes files from,
is a configuration error of fc-conveyor (exit 3, nothing started): each copy would be a new file of the source,
sent again into static/static/... for ever (seen: fc-conveyor with <location> the scanPath and path="static"), and
with the symlink_within fc-conveyor sets, a destination that is the source would replace each file with a link to
itself.  Inside the source but left out (ignoredDirs, or outside the rule's <paths>), it is valid.  The real
fc-conveyor, on real folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def conveyor(tmp_path: Path, location: str, path: str, ignored: str = "CVS", paths: str = "") -> tuple[int, str]:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True, exist_ok=True)
    (site / "css" / "a.css").write_bytes(b"precious\n")
    filt = f"<filter><paths>{paths}</paths></filter>" if paths else ""
    cfg = tmp_path / "config.xml"
    cfg.write_text(
        f"""<?xml version="1.0"?>
<config>
  <sources ignoredDirs="{ignored}"><source name="site" scanPath="{site}" /></sources>
  <servers>
    <server name="local" transporter="symlink_or_copy"><location>{location}</location><url>http://cdn/</url></server>
  </servers>
  <rules>
    <rule for="site" label="all">{filt}<destinations><destination server="local" path="{path}" /></destinations></rule>
  </rules>
</config>
"""
    )
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    argv = [sys.executable, str(ROOT / "bin" / "fc-conveyor"), "--pid-file", str(tmp_path / "fc.pid")]
    argv += ["--log-file", str(tmp_path / "fc.log")]
    check = subprocess.run([*argv, "--check", str(cfg)], capture_output=True, text=True, env=env, timeout=60)
    if check.returncode == 0:
        return 0, check.stderr
    run = subprocess.run([*argv, str(cfg)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == check.returncode, run.stderr
    assert (site / "css" / "a.css").read_bytes() == b"precious\n" and not (site / "css" / "a.css").is_symlink()
    return check.returncode, check.stderr


def test_a_destination_that_is_the_source_folder_is_refused(tmp_path: Path) -> None:
    status, err = conveyor(tmp_path, str(tmp_path / "site"), "")
    assert status == 3, err
    assert f"config.xml:8: destination server 'local' with path '' is {tmp_path / 'site'}, the folder of" in err, err


def test_a_destination_inside_the_source_folder_is_refused(tmp_path: Path) -> None:
    status, err = conveyor(tmp_path, str(tmp_path / "site"), "static")
    assert status == 3, err
    assert "config.xml:8: destination server 'local' with path 'static'" in err, err
    assert "sent again into static/static/... for ever" in err and "add 'static' to <sources ignoredDirs>" in err, err


@pytest.mark.parametrize(
    "where",
    [
        {"ignored": "CVS:static"},  # fc-watch never reports the copies
        {"paths": "css"},  # the rule takes files from css/ only
        {},  # outside the source: the usual set-up
    ],
)
def test_a_destination_the_source_leaves_out_is_valid(tmp_path: Path, where: dict[str, str]) -> None:
    location = str(tmp_path / ("cdn" if not where else "site"))
    status, err = conveyor(tmp_path, location, "static", **where)
    assert status == 0, err
