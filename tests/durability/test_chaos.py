"""The short chaos run of `make test`: the whole pipeline over FIFOs, stages killed
with -9 (one, or all at once) while the source tree changes, then convergence of
the destination and the record database to exactly the source.  `make chaos` runs
the same for as many rounds as asked (bench/chaos.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import require_tool
from tests.durability import chaos


def test_short_chaos_run_converges_exactly(tmp_path: Path) -> None:
    require_tool("bash")
    report = chaos.run(tmp_path, rounds=12, files=120, seed=11, converge_timeout=90)
    print(report.summary())
    assert report.rounds == 12 and sum(report.kills.values()) >= 12
    assert report.ok, (
        f"{report.summary()}\nlost {report.lost[:5]} extra {report.extra[:5]} "
        f"record {report.record_wrong[:5]}\n{report.stderr_tail}"
    )
    assert report.converge_seconds < 90
