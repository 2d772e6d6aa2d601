"""The one back-off helper: the same waits every caller had, no overflow after many tries, jitter in range."""

from __future__ import annotations

import itertools

import pytest

from fileconveyor import backoff


@pytest.mark.parametrize(
    ("start", "cap"),
    # every caller's start and cap: fc-process (its default --retry-delay), fc-record and the runner's
    # retries, old files and purges in fc-transport, the runner's lanes, the supervisor
    [(5.0, 600.0), (2.0, 60.0), (2.0, 300.0), (1.0, 300.0), (0.5, 30.0), (0.2, 60.0)],
)
def test_doubles_from_start_up_to_cap(start: float, cap: float) -> None:
    waits = [backoff.delay(n, start, cap) for n in range(40)]
    assert waits[0] == start
    for before, after in itertools.pairwise(waits):
        assert after == min(cap, before * 2)
    assert waits[-1] == cap


def test_the_waits_callers_had_before() -> None:
    # the expressions the callers wrote themselves, for the tries they can reach before the cap
    for n in range(12):
        assert backoff.delay(n, 5.0, 600.0) == min(600.0, 5.0 * 2 ** min(n, 20))
        assert backoff.delay(n, 2.0, 60.0) == min(60.0, 2.0 * 2 ** min(n, 5))
        assert backoff.delay(n, 0.5, 30.0) == min(30.0, 0.5 * 2**n)


def test_a_server_down_for_thousands_of_tries_waits_the_cap_and_raises_nothing() -> None:
    # ``2.0 * 2 ** 1100`` raises OverflowError: a retry counter that is never reset would have
    # crashed its caller after about a thousand tries
    with pytest.raises(OverflowError):
        _ = 2.0 * 2**1100
    assert backoff.delay(1100, 2.0, 300.0) == 300.0
    assert backoff.delay(10**9, 0.5, 30.0) == 30.0


def test_a_negative_attempt_waits_start() -> None:
    assert backoff.delay(-1, 2.0, 300.0) == 2.0


def test_jitter_stays_in_the_upper_half_and_varies() -> None:
    waits = {backoff.delay(3, 1.0, 300.0, jitter=True) for _ in range(200)}
    assert all(4.0 <= w <= 8.0 for w in waits)
    assert len(waits) > 100  # random, not one fixed point
    capped = [backoff.delay(50, 1.0, 300.0, jitter=True) for _ in range(200)]
    assert all(150.0 <= w <= 300.0 for w in capped)
