"""A lane in trouble pauses with back-off: 1 s (with jitter) doubling to 300 s, afresh once an item goes through."""

from __future__ import annotations

import time

from fileconveyor.delivery.lanes import LANE_BACKOFF_MAX, Scheduler
from fileconveyor.delivery.stage import Item, Retry


def _fail_probe(sched: Scheduler, item: Item) -> float:
    """Let the pause end, hand the item out again (the probe) and have it find the server down: the new pause."""
    lane = sched.lanes["dest"]
    lane.paused_until = 0.0
    assert list(sched.due(time.time())) == [item]
    before = time.monotonic()
    sched.retry(item, Retry("server down", lane=True))
    return lane.paused_until - before


def test_pauses_double_with_jitter_up_to_the_cap_and_start_afresh() -> None:
    sched = Scheduler({"dest": 1})
    item = Item({}, b"{}", "dest", b"a", 0)
    sched.add(item)
    pauses = [_fail_probe(sched, item) for _ in range(14)]
    for n, pause in enumerate(pauses):
        full = min(LANE_BACKOFF_MAX, 2.0**n)
        assert full * 0.5 - 0.01 <= pause <= full + 0.01, (n, pauses)
    assert pauses[-1] >= LANE_BACKOFF_MAX / 2 - 0.01
    sched.lanes["dest"].paused_until = 0.0
    assert list(sched.due(time.time())) == [item]
    sched.finished(item)  # the server is back
    other = Item({}, b"{}", "dest", b"b", 1)
    sched.add(other)
    assert 0.5 - 0.01 <= _fail_probe(sched, other) <= 1.0 + 0.01  # down again: the first pause again
