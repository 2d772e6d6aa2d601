"""The supervisor's restart back-off: doubling from 0.5 s up to RESTART_INTERVAL, for as long as a stage keeps dying."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import pytest

from fileconveyor.conveyor import plan as P
from fileconveyor.conveyor.config import load
from fileconveyor.conveyor.supervisor import Supervisor
from tests.conveyor.test_config import minimal, write


@pytest.mark.parametrize(("failures", "expected"), [(0, 0.5), (1, 1.0), (4, 8.0), (5, 10.0), (5000, 10.0)])
def test_a_stage_that_keeps_dying_is_restarted_after_a_capped_wait(
    tmp_path: Path, state_dir: Path, failures: int, expected: float
) -> None:
    # A stage dying quickly for hours counts thousands of failures; 0.5 * 2 ** 5000 raised
    # OverflowError in the supervisor's loop, and fc-conveyor died with every stage.
    sup = Supervisor(P.build(load(write(tmp_path, minimal()))), logging.getLogger("test-restart-backoff"))
    child = sup.children[0]
    child.popen = subprocess.Popen(["false"])
    child.popen.wait()
    now = time.monotonic()
    child.started = now  # it died at once: a quick death, counted
    child.failures = failures
    assert sup._reap(now) is None
    assert child.failures == failures + 1
    assert child.restart_at == pytest.approx(now + expected)
