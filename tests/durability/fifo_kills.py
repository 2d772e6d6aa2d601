"""What the FIFO kill tests share: the events a writer is fed, and feeding them while the reader is killed -9 and
restarted at random (tests/durability/test_fifo_restart.py, test_null_output.py)."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from typing import IO

from fileconveyor import events as E


def make_events(n: int, **more: object) -> list[bytes]:
    """``n`` created events under /r/d0../d16 with ids id00000..., each with ``more`` fields (the ``{i}`` of a
    string value becomes its number)."""
    out = []
    for i in range(n):
        e: dict = {"v": 1, "id": f"id{i:05d}", "kind": "created", "source": "s", "root": "/r"}
        E.put_path(e, "path", f"/r/d{i % 17}/f{i}.css".encode())
        E.put_path(e, "rel", f"d{i % 17}/f{i}.css".encode())
        e["size"] = i
        e.update({k: v.format(i=i) if isinstance(v, str) else v for k, v in more.items()})
        out.append(E.encode(e))
    return out


def feed_killing_the_reader(
    stdin: IO[bytes], lines: list[bytes], start_reader: Callable[[], subprocess.Popen[bytes]], seed: int
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the reader, write ``lines`` into the writer's ``stdin`` 100 at a time, killing the reader -9 after
    about a third of the batches and starting it again; then close ``stdin``.  Returns the reader running at the
    end (killed here if this fails), and the kills."""
    rng = random.Random(seed)
    reader, kills = start_reader(), 0
    try:
        for start in range(0, len(lines), 100):
            stdin.write(b"".join(lines[start : start + 100]))
            stdin.flush()
            time.sleep(rng.uniform(0.0, 0.05))
            if rng.random() < 0.35:
                reader.send_signal(signal.SIGKILL)
                reader.wait()
                kills += 1
                time.sleep(rng.uniform(0.0, 0.2))
                reader = start_reader()
        stdin.close()
    except BaseException:
        reader.kill()
        reader.wait()
        raise
    return reader, kills
