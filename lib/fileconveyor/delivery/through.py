"""End-to-end ("through") acknowledgements: how far a writer's lines are done by us *and* every stage after us.

A reader's acknowledgement (``seq``, delivery/durable.py) says what it holds safely in its own state file: the
writer may forget those lines, since the reader re-sends what it made of them after a restart.  That is enough on
one machine.  A worker of the broker hop (docs/scale-out.md) may be lost for good, its state files with it; then
what its later stages still held is gone while the broker counts it done.  So each acknowledgement also carries
``through``: the highest seq of the writer such that every line up to it is done here, and every line we made of
them is acknowledged-through by each of our own readers.  fc-consume acknowledges a message to the broker only
once its line is through (stages/consume/stage.py).  A stage with no File Conveyor reader acknowledging it (the
last stage; output into a terminal, a file, jq) is the end of the chain: its through is its mark.

What we made of the lines up to a mark is found without bookkeeping per line: when we acknowledge a mark M to a
writer, every line up to M is done and committed, so its outputs are in our outbox at or below our highest seq
so far (H).  Each (M, H) is a step; once our readers are through H, M is through.  H may cover outputs of later
lines as well (fc-transport finishes out of order; a filtered line makes none): through then waits a little
longer, never less.  Nothing of this is stored: after a restart the first step is the stored mark with our
highest seq then, and until it is through the writer's row keeps what our previous process had said.
"""

from __future__ import annotations

from collections import deque

from .durable import StageState


class Through:
    """Per writer: the steps (our mark for it, our highest output seq then) not yet through our readers."""

    def __init__(self, state: StageState):
        self.state = state
        self.steps: dict[str, deque[list[int]]] = {}
        self.epochs: dict[str, str] = {}
        self.done: dict[str, int] = {}  # through, as known in this process

    def compute(self, marks: dict[str, tuple[str, int]]) -> dict[str, int | None]:
        """The through of each writer in ``marks`` (what we acknowledge it now); None: not known yet."""
        if not marks:
            return {}
        below = self.state.throughs()
        limit = min(below.values()) if below else None  # None: no reader of ours acknowledges, we are the last
        high = self.state.next_seq - 1
        out: dict[str, int | None] = {}
        for origin, (epoch, mark) in marks.items():
            if self.epochs.get(origin) != epoch:  # a writer new to us, or its state made anew
                self.epochs[origin] = epoch
                self.steps[origin] = deque()
                self.done.pop(origin, None)
            steps = self.steps[origin]
            while steps and steps[-1][0] > mark:  # our mark went back (a replay asked for): those are not done
                steps.pop()
            if limit is None:
                steps.clear()
                self.done[origin] = mark
            else:
                if not steps or steps[-1][0] < mark:
                    if steps and steps[-1][1] == high:
                        steps[-1][0] = mark  # nothing new made since: the same step goes further
                    else:
                        steps.append([mark, high])
                while steps and steps[0][1] <= limit:
                    self.done[origin] = max(self.done.get(origin, 0), steps.popleft()[0])
            out[origin] = self.done.get(origin)
        return out
