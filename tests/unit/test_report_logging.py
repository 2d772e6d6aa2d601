"""The library's logging messages go out through the stage's reporter, and logging is imported only when a module
asks for its logger (report.get_logger): a few ms of every stage's start-up otherwise (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import io, sys
from fileconveyor.report import Reporter, get_logger, log_info, route_logging
err = io.StringIO()
route_logging(Reporter("fc-x", err, VERBOSITY))
log_info("fileconveyor.private", "quiet %s", 1)
print("logging" in sys.modules)
get_logger("fileconveyor.transporters.t").warning("shown %s", 2)
get_logger("fileconveyor.transporters.t").info("info %s", 3)
sys.stdout.write(err.getvalue())
"""


def probe(verbosity: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    code = PROBE.replace("VERBOSITY", str(verbosity))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30, check=True)
    return p.stdout.splitlines()


def test_a_message_nobody_can_see_imports_no_logging_and_the_rest_is_routed() -> None:
    assert probe(0) == ["False", "fc-x: warning: shown 2"]


def test_with_verbose_the_info_messages_show() -> None:
    assert probe(1) == ["True", "fc-x: quiet 1", "fc-x: warning: shown 2", "fc-x: info 3"]
