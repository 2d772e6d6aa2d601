"""The last line fc-tee passed on from each writer, for a reader that comes late (stage.py, docs/durability.md).

A late reader registers with the writer a line names (``hop.from`` and ``hop.epoch``), which then re-sends what
it missed.  fc-tee kept only the last line with a hop, and anyone who writes fc-tee's input can make that one a
line whose hop names no writer of ours (a made-up state file, or another pipeline's): the late reader registered
with that one alone and got none of what it missed.  So fc-tee keeps the last line of each writer and gives a late
reader all of them: a reader registers with each, and a forged one costs it a warning and a held line.

Bounded, since a forger can name endless writers: MAX_WRITERS of them, each line at most MAX_LINE bytes.  When a
new one comes and there is no room, the writer that goes is the one used least recently among those whose
``hop.from`` is not a File Conveyor state file of that epoch (``_StateFiles``), and only when all are, the
least recent of those: a flood of made-up writers pushes out made-up writers, never the real one, which names its
own state file.  The files are looked at only then (never while MAX_WRITERS or fewer write to us, as a rule one):
once per writer, opened as a reader opens a writer's state to acknowledge to it (ack_check.open_state), read and
closed at once.

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

from ... import events as E
from ...delivery import ack_check

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

    def __init__(self, max_writers: int = MAX_WRITERS) -> None:
        self.max_writers = max_writers
        self._lines: OrderedDict[Writer, bytes] = OrderedDict()  # least recently written first
        self._real: dict[Writer, bool] = {}  # writers looked at: whether their hop names their state file
        self._files = _StateFiles()

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
        made_up = None
        for writer in self._lines:
            real = self._real.get(writer)
            if real is None:
                real = self._real[writer] = self._files.is_writer_state(*writer)
            if not real:
                made_up = writer
                break
        gone = made_up if made_up is not None else next(iter(self._lines))
        del self._lines[gone]
        self._real.pop(gone, None)


class _StateFiles:
    """Whether a path is the state file of the writer of an epoch, as last read (per path: its identity and
    change time, and the epoch it held then), so that many made-up epochs of one real path cost a stat each."""

    MAX = 256

    def __init__(self) -> None:
        self._read: dict[str, tuple[tuple[int, int, int], str | None]] = {}

    def is_writer_state(self, origin: str, epoch: str) -> bool:
        try:
            st = os.stat(origin)
        except (OSError, ValueError):  # (ValueError: a NUL in the name)
            return False
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open; a device is no state file
            return False
        ident = (st.st_dev, st.st_ino, st.st_ctime_ns)
        known = self._read.get(origin)
        if known is not None and known[0] == ident:
            return known[1] == epoch
        found = _epoch(origin)
        if len(self._read) >= self.MAX:
            self._read.clear()
        self._read[origin] = (ident, found)
        return found == epoch


def _epoch(origin: str) -> str | None:
    """The epoch of the File Conveyor state file at ``origin``, None when it is none (or cannot be read)."""
    try:
        conn = ack_check.open_state(origin)
    except sqlite3.Error:
        return None
    try:
        return ack_check.state_epoch(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
