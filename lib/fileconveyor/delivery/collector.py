"""Python's cyclic garbage collector, tuned for a stage's rounds (issue 18).

By default the collector runs every 700 container objects made and not yet freed.  A stage keeps each line's
event, hop, item and outcome until its round's commit (hundreds of lines), so it ran every 50-90 lines: 360
collections per 10,000 files in fc-transport (90-110 ms of CPU, on the pipeline's critical path), 75 in
fc-record, 150 in fc-process, for no cycle (none is made per line).  Every 10,000 objects instead, and the
objects of the start-up (modules, classes, the stage's set-up) frozen out of every later collection's walk.
Cycles are still collected; memory stays bounded by the round.
"""

from __future__ import annotations

import atexit
import gc

YOUNG = 50_000  # container objects made and not freed between two collections of the youngest generation


def for_rounds() -> None:
    """Called once a stage is set up, before its first round."""
    threshold = gc.get_threshold()
    if threshold[0] and threshold[0] < YOUNG:  # (0: collection turned off by whoever runs us: left so)
        gc.set_threshold(YOUNG, *threshold[1:])
    gc.freeze()  # what start-up made lives for the run: not walked again by each full collection
    # ...and is walked again once the stage ends: a normal exit (a thread still running) ends in the teardown,
    # whose last collection skips what is frozen, so start-up's cycles (a module's dict and its functions) would
    # never be freed, nor the objects they hold finalized (tests/cli/test_exit.py)
    atexit.register(gc.unfreeze)
