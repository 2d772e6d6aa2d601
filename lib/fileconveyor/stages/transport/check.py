"""The start-up check of fc-transport and fc-conveyor: log in to every destination before any event is read.

A wrong password, a refused key, a bucket that does not exist or a read-only root would otherwise show only at
the first transfer, after events were taken in, and ``fc-conveyor --check`` would call such a config valid.
Each destination's transporter logs in and looks at its root (``Transporter.check_access``), all at once.

- Refused (AuthError or another PermanentError): a configuration error naming each destination and what it
  refused (exit 3); nothing would get through, so nothing is started.
- Not answering (TransientError, or no answer within ``wait`` seconds): not a mistake in the set-up; the
  stage starts and its events queue until the server answers, as they would for a server that goes down later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ...errors import ConfigError, FCError
from ...transporters import PermanentError, Transporter
from .dest import Target

CHECK_WAIT = 10.0  # seconds the start waits for a destination's answer before going on without it


def check_access(
    targets: Sequence[Target], warn: Callable[[str], None], wait: float = CHECK_WAIT
) -> dict[str, Transporter]:
    """The transporters that logged in, by destination name (connected: the first transfers can use them).
    Raises ConfigError when a destination refused us; names the ones that did not answer to ``warn``."""
    done: dict[str, Transporter | BaseException] = {}
    lock = threading.Lock()
    late = threading.Event()  # set once the start went on: a check finishing afterwards closes its connection

    def check(t: Target) -> None:
        tp = t.make()
        try:
            tp.check_access()
        except BaseException as exc:
            tp.close()
            with lock:
                done[t.name] = exc
            return
        with lock:
            if late.is_set():
                tp.close()
            else:
                done[t.name] = tp

    threads = [threading.Thread(target=check, args=(t,), name=f"check {t.name}", daemon=True) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(wait)  # all run at once: the whole check takes at most about ``wait``
    with lock:
        late.set()
        results = dict(done)
    refused, ready = [], {}
    for t in targets:
        got = results.get(t.name)
        if isinstance(got, Transporter):
            ready[t.name] = got
        elif got is None:
            warn(f"{_who(t)}: no answer within {wait:g} s; starting anyway: its files wait until it answers")
        elif isinstance(got, PermanentError):  # AuthError included
            refused.append(_said(t, got))
        elif isinstance(got, FCError):  # TransientError: down, unreachable, "try later"
            warn(f"{_said(t, got)}; starting anyway: its files wait until it answers")
        else:
            for tp in ready.values():
                tp.close()
            raise got
    if refused:
        for tp in ready.values():
            tp.close()
        said = "; ".join(r.rstrip(". ") for r in refused)
        raise ConfigError(f"refused at start: {said}. Nothing was read or sent: fix this and start again")
    return ready


def _who(t: Target) -> str:
    """The destination as its user knows it: its spec, and its name unless that is the default (its host, or its
    scheme for file://).  A name that only appears in the spec (config.xml's server "sftp" in sftp://...) is shown:
    it is what the user must look for."""
    spec = str(t.dest)
    return spec if t.name in (t.dest.host, t.dest.scheme) else f"{t.name} ({spec})"


def _said(t: Target, exc: BaseException) -> str:
    text = str(exc)
    spec = str(t.dest)
    return text.replace(spec, _who(t), 1) if text.startswith(spec) else f"{_who(t)}: {text}"
