"""Stopping on a signal: the flag every loop checks and the descriptor a sleeping poll() wakes up on."""

from __future__ import annotations

import os
import signal


class Stopper:
    """Turns SIGTERM/SIGINT into a flag that loops check, plus a file descriptor that
    becomes readable, so a loop sleeping in poll() wakes up at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def fileno(self) -> int:
        return self._r

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum = signum
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for a clean end
        self.request(signum)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
        os.close(self._r)
        os.close(self._w)
