"""What the gates in front of the S3 (s3.py) and Swift (swift.py) test servers share: a request body copied to
a file as it arrives (an upload in progress, seen on disk), the reply status captured on the way out, and the
atomic file system view of what the store holds."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Tee:
    """wsgi.input that also appends what is read to a file: an upload (or a multipart part) as it arrives."""

    def __init__(self, stream: Any, path: Path):
        self.stream, self.out = stream, open(path, "ab")  # noqa: SIM115 - closed by close()

    def read(self, *args: Any) -> bytes:
        data = self.stream.read(*args)
        self.out.write(data)
        self.out.flush()
        return data  # type: ignore[no-any-return]

    def readline(self, *args: Any) -> bytes:
        data = self.stream.readline(*args)
        self.out.write(data)
        self.out.flush()
        return data  # type: ignore[no-any-return]

    def close(self) -> None:
        self.out.close()


def capturing(start_response: Callable[..., Any]) -> tuple[list[str], Callable[..., Any]]:
    """A start_response that notes the status line in the returned list before passing it on."""
    status: list[str] = []

    def capture(code: str, headers: Any, *exc: Any) -> Any:
        status.append(code)
        return start_response(code, headers, *exc)

    return status, capture


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        pass


def show(files: Path, local: Path, data: bytes | None, lock: threading.Lock) -> None:
    """Make ``local`` (under ``files``) hold ``data``, or remove it for None, atomically: a reader never sees
    half a file.  A store has "f" and "f/x" side by side, a file system cannot: such a clash is only logged."""
    with lock:
        if data is None:
            unlink_quietly(local)
            return
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = files / f".mirror-{threading.get_ident()}"
            tmp.write_bytes(data)
            os.replace(tmp, local)
        except OSError as exc:
            print(f"cannot show {local} as a file: {exc}", file=sys.stderr, flush=True)
