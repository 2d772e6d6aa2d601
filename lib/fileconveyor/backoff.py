"""Exponential back-off: the one place that says how long to wait before trying again.

Every retry in File Conveyor (a deferred event in fc-process, a busy database in fc-record,
an old remote file or a CDN purge in fc-transport, a paused lane, a quarantined item, a
stage the supervisor restarts) waits ``start`` seconds the first time and twice as long
each time after, up to ``cap``.  Each caller keeps its own start and cap.

The count of doublings is clamped: retry counters are never reset while a server stays
down, and ``start * 2 ** n`` with a large int ``n`` raises OverflowError (a float cannot
hold it) after about a thousand tries, long after the cap was reached.
"""

from __future__ import annotations

# Past this many doublings every delay has long been at its cap (2**64 > 1e19: any start
# above a cap of a year divided by 1e19 reaches it), and 2.0 ** 64 is still a float.
_MAX_DOUBLINGS = 64


def delay(attempt: int, start: float, cap: float, jitter: bool = False) -> float:
    """Seconds to wait after ``attempt`` earlier waits: ``start * 2 ** attempt``, at most ``cap``.

    ``attempt`` 0 gives ``start``.  With ``jitter`` the wait is a random point in the upper half
    of that (between 0.5 and 1 times it), so many stages or machines waiting for one server that
    came back do not all knock at the same moment.
    """
    wait = min(cap, start * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))
    if not jitter:
        return wait
    import random  # here, not at the top: a stage that never waits does not load it (0.2 MB of RSS each)

    return wait * random.uniform(0.5, 1.0)
