"""The loop of a pass-through stage (fc-tee, fc-filter): whole lines copied as they came, no state file.

A pass-through stage keeps nothing and acknowledges nothing: the lines it passes keep the ``hop`` of the stage
that wrote them, byte for byte, so the reader after it acknowledges straight to that writer, and that writer
re-sends what the reader has not acknowledged when either of them (or the pass-through between) is restarted
(docs/durability.md, "Pass-through stages").  A line it drops leaves a gap in the writer's seqs, which readers
take as lines a filter in between dropped.

What the loop owns: numbering the lines, reporting a torn last line or one longer than --max-line-bytes (skipped),
and handing the lines a stage keeps to its ``write`` a read at a time (one write per read, not per line: the
lines that one read of the input brought go on in one write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .streams import LongLine

# (a whole line, its number) -> the line to pass on (itself, or the whole line glued to a torn start in it:
# events.unglue), or None
Keep = Callable[[bytes, int], "bytes | None"]


def copy_lines(
    batches: Iterable[list[bytes]],
    write: Callable[[bytes], None],
    error: Callable[[str], None],
    max_line_bytes: int,
    keep: Keep | None = None,
    after: Callable[[], list[bytes]] | None = None,
) -> int:
    """Copy the whole lines of ``batches`` (input_batches) that ``keep`` keeps (None: all), as it gives them, to
    ``write``, the
    lines of one batch joined, followed by what ``after`` gives then (fc-filter's marks of dropped lines); a torn
    last line or a LongLine is reported to ``error`` and dropped.  Returns how many lines were torn or too long."""
    torn = 0
    lineno = 0
    for batch in batches:
        first = lineno + 1
        lineno += len(batch)
        if keep is None and batch[-1].endswith(b"\n") and all(type(line) is bytes for line in batch):
            # a tee's usual read: whole lines (only the last of a read can be torn; a LongLine is no plain bytes)
            write(b"".join(batch))
            continue
        kept: list[bytes] = []
        for n, line in enumerate(batch, first):
            if not line.endswith(b"\n"):
                torn += 1
                if isinstance(line, LongLine):
                    error(
                        f"input line {n}: {line.length} bytes, longer than --max-line-bytes "
                        f"{max_line_bytes}: {line[:200]!r} (skipped)"
                    )
                else:
                    error(f"incomplete last line from the writer dropped: {line[:200]!r}")
                continue
            if keep is None:
                kept.append(line)
            else:
                out = keep(line, n)
                if out is not None:
                    kept.append(out)
        if after is not None:
            kept += after()
        if kept:
            write(b"".join(kept))
    return torn
