"""The last line fc-tee passed on from each writer, for a reader that comes late (stage.py, docs/durability.md).

A late reader registers with the writer a line names (``hop.from`` and ``hop.epoch``), which then re-sends what
it missed.  fc-tee kept only the last line with a hop, and anyone who writes fc-tee's input can make that one a
line whose hop names no writer of ours (a made-up state file, or another pipeline's): the late reader registered
with that one alone and got none of what it missed.  So fc-tee keeps the last line of each writer and gives a late
reader all of them: a reader registers with each, and a forged one costs it a warning and a held line.

Bounded, since a forger can name endless writers: MAX_WRITERS of them, each line at most MAX_LINE bytes.  When a
new one comes and there is no room, the writer that goes is the one used least recently among those whose
``hop.from`` is not a File Conveyor state file of that epoch (``_StateFiles``), then the least recent of those
whose state file does not say that its current run writes into our input (ack_check.writes_into: a pipe or FIFO
no other user writes into), and only when all do, the least recent: a flood of made-up writers pushes out made-up
writers, never the real one, which names its own state file; nor do the lines of other real writers (other
pipelines' fc-watch runs, which a stage of ours that forges may start or read the state of: 20 of them pushed
the real writer out, and a late branch got none of what it missed).  The files are looked at only then (never
while MAX_WRITERS or fewer write to us, as a rule one): once per writer, opened as a reader opens a writer's state
to acknowledge to it (ack_check.open_state), read and closed at once.

Finding each writer's last line costs one decode per write as a rule: when the write has no backslash and every
``"from"`` and ``"epoch"`` in it is in the hop of its last line with a hop, every line with a hop is of that writer
(``last_per_writer``); three counts over the write, about 0.6 us a line of fc-watch's (200,000 lines through fc-tee
to two files: 0.41 s of CPU before, 0.53 s with it, the medians of 5 on a loaded 2-core machine).  Otherwise each
line is looked at, from the end: one that ends with the hop of a line decoded after it has that line's writer and is
skipped without a decode, the others decoded.  Both give what decoding every line gives (tests/stages/
test_tee_writers.py).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections import OrderedDict
from typing import IO

from ... import events as E
from ...delivery import ack_check, runs
from ...delivery.streams import has_fd

MAX_WRITERS = 16
# A longer line is not kept (a writer's earlier one stays): a real event is under a few KiB, and MAX_WRITERS lines
# of --max-line-bytes (1 MiB) each would be memory a forger decides.
MAX_LINE = 64 * 1024

Writer = tuple[str, str]  # hop.from, hop.epoch

_SEQ = b',"seq":'


def last_per_writer(data: bytes) -> list[tuple[Writer, bytes]]:
    """The last line of each writer in ``data`` (whole lines), as (writer, line), in the order of those lines.
    The same as decoding every line (events.decode: a line that does not decode, or has no hop, counts for none),
    at one decode per write as a rule (the module's doc)."""
    end = len(data)
    while end > 0:  # the last line with a hop
        start = data.rfind(b"\n", 0, end - 1) + 1
        try:
            hop = E.decode(data[start:end]).get("hop")
        except E.EventError:
            hop = None
        if hop is not None:
            break
        end = start
    else:
        return []
    writer = (hop["from"], hop["epoch"])
    last = data[start:end]
    # No backslash (no key spelled with an escape), and every '"from"' and '"epoch"' of the write in this writer's
    # hop as our writers spell it: then every line's hop is this writer's.  (A hop's from and epoch keys are in it as
    # those bytes; each in one such place says that the object holding it is the value of a "hop" key, whose from
    # and epoch are this writer's and given once, so no repeat of them is left.)  A backslash is one memchr; names
    # with a quote, a backslash or a control character in them take the way below.
    if b"\\" not in data:
        hops = data.count(b'"hop":' + E.hop_head(*writer))
        if data.count(b'"from"') == hops and data.count(b'"epoch"') == hops:
            return [(writer, last)]
    found: dict[Writer, bytes] = {writer: last}
    order = [writer]
    # the ends (_hop_key) of lines decoded: a line with the same end has the same writer, whose line after it is
    # found already, so it is skipped without a decode (a line of a writer of ours ends so, its hop last)
    key = _hop_key(last)
    skip = {key} if key is not None else set()
    end = start
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        line = data[start:end]
        end = start
        key = _hop_key(line)
        if key is not None and key in skip:
            continue
        try:
            hop = E.decode(line).get("hop")
        except E.EventError:
            continue
        if hop is None:
            continue
        if key is not None:
            skip.add(key)
        writer = (hop["from"], hop["epoch"])
        if writer not in found:
            found[writer] = line
            order.append(writer)
    return [(w, found[w]) for w in reversed(order)]


def _hop_key(line: bytes) -> bytes | None:
    """What ends ``line`` from its last ``,"hop":{"from":`` to its hop's ``,"seq":N}}``, when it ends so, else None.
    Two lines that decode and end the same have the same writer: that end holds the line's last "hop" member (the
    last member of its object), and all of that member's object but its seq."""
    if not line.endswith(b"}}\n"):
        return None
    at = line.rfind(b',"hop":{"from":')
    if at < 0:
        return None
    seq = line.rfind(_SEQ, at)
    if seq < 0 or not line[seq + len(_SEQ) : -3].isdigit():  # (bytes: ASCII digits only)
        return None
    key = line[at:seq]
    # no brace but the hop's own: then the hop's object is the one that ends with that seq, and a member of the line's
    # object (the next brace closes it), not of an object nested in it (a brace in a name: decoded, as any line)
    return key if key.count(b"{") == 1 and b"}" not in key else None


class LastLines:
    """The last line of each of at most ``max_writers`` writers (the module's doc)."""

    def __init__(self, max_writers: int = MAX_WRITERS, source: ack_check.Ident | None = None) -> None:
        self.max_writers = max_writers
        self._lines: OrderedDict[Writer, bytes] = OrderedDict()  # least recently written first
        self._real: dict[Writer, int] = {}  # writers looked at: their _StateFiles.rank
        self._files = _StateFiles(source)

    def note(self, data: bytes) -> None:
        """Keep the last line of each writer in ``data`` (whole lines, as passed on)."""
        for writer, line in last_per_writer(data):
            if len(line) > MAX_LINE:
                continue
            self._lines[writer] = line
            self._lines.move_to_end(writer)
            if len(self._lines) > self.max_writers:
                self._evict()

    def lines(self) -> list[bytes]:
        """Each writer's last line, the least recent first."""
        return list(self._lines.values())

    def __len__(self) -> int:
        return len(self._lines)

    def _evict(self) -> None:
        gone: Writer | None = None
        lowest = OURS + 1
        for writer in self._lines:  # the least recent of the lowest rank (a made-up one: the first such, at once)
            rank = self._real.get(writer)
            if rank is None:
                rank = self._real[writer] = self._files.rank(*writer)
            if rank < lowest:
                gone, lowest = writer, rank
                if rank == MADE_UP:
                    break
        assert gone is not None
        del self._lines[gone]
        self._real.pop(gone, None)


MADE_UP, REAL, OURS = 0, 1, 2  # _StateFiles.rank: a writer kept before one of a lower rank


def input_pipe(path: str | None, stdin: IO[bytes] | None) -> ack_check.Ident | None:
    """fc-tee's input (``path``, a named FIFO, or else stdin) when it is a pipe or FIFO that no other user may
    write into (ack_check.others_may_write): a writer whose state file says it writes there is ours then."""
    if path not in (None, "-"):
        return None if ack_check.others_may_write(path=path) else ack_check.input_ident(path=path)
    fd = stdin.fileno() if stdin is not None and has_fd(stdin) else None
    if fd is None or ack_check.others_may_write(fd=fd):
        return None
    return ack_check.input_ident(fd=fd)


class _StateFiles:
    """How a path stands as the state file of the writer of an epoch, as last read (per path: its identity and
    change time, the epoch it held then and whether its run wrote into ``source``), so that many made-up epochs
    of one real path cost a stat each."""

    MAX = 256

    def __init__(self, source: ack_check.Ident | None = None) -> None:
        self.source = source
        self._boot = runs.boot_id() if source is not None else None
        self._read: dict[str, tuple[tuple[int, int, int], str | None, bool]] = {}

    def rank(self, origin: str, epoch: str) -> int:
        """OURS: the state file of the writer of ``epoch``, whose current run writes into our input; REAL: that
        writer's state file, not saying so; MADE_UP: anything else."""
        try:
            st = os.stat(origin)
        except (OSError, ValueError):  # (ValueError: a NUL in the name)
            return MADE_UP
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open; a device is no state file
            return MADE_UP
        ident = (st.st_dev, st.st_ino, st.st_ctime_ns)
        known = self._read.get(origin)
        if known is None or known[0] != ident:
            known = (ident, *self._look(origin))
            if len(self._read) >= self.MAX:
                self._read.clear()
            self._read[origin] = known
        return MADE_UP if known[1] != epoch else OURS if known[2] else REAL

    def _look(self, origin: str) -> tuple[str | None, bool]:
        """The epoch of the File Conveyor state file at ``origin`` (None when it is none, or cannot be read), and
        whether its writer's current run writes into our input."""
        try:
            # Never waiting for a lock (a reader's 0.5 s): the path is a line's, this is our main loop, and a file
            # held locked (BEGIN EXCLUSIVE) behind a link per forged line stopped every branch 0.5 s a line.  A
            # writer's own state is in WAL mode, where a reader does not wait for its commits.
            conn = ack_check.open_state(origin, timeout=0)
        except sqlite3.Error:
            return None, False
        try:
            epoch = ack_check.state_epoch(conn)
            into = (
                epoch is not None and self.source is not None and ack_check.writes_into(conn, self.source, self._boot)
            )
            return epoch, into
        except sqlite3.Error:
            return None, False
        finally:
            conn.close()
