"""The synced_files row of an event fc-record records (stage.py): from its fields as they are when they are the
usual plain strings, through their bytes (events.get_path) when a name is not UTF-8."""

from __future__ import annotations

import json
import time
from typing import Any

from ... import events as E
from ...records import Synced, db_key


def error_text(err: Any) -> str:
    """The message of an ``error`` field: a string (fc-transport) or an object with ``message`` (docs/events.md)."""
    if isinstance(err, dict):
        return str(err.get("message") or json.dumps(err, ensure_ascii=False))
    return str(err)


def _int(value: Any) -> int | None:
    if type(value) is int:  # the usual case first (a bool is no int here: its type is bool)
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _maybe_path(ev: dict, field: str) -> str | bytes | None:
    if field not in ev and field + "_b64" not in ev:
        return None
    try:
        return _key(ev, field)
    except E.EventError:
        return None


def _key(ev: dict, field: str) -> str | bytes:
    """db_key(E.get_path(ev, field)), without the round trip through bytes for a plain string (events.decode has
    refused every string UTF-8 cannot carry, so the bytes would decode to the same text)."""
    if field + "_b64" not in ev:
        value = ev.get(field)
        if type(value) is str:
            return value
    return db_key(E.get_path(ev, field))


def _base(key: str | bytes) -> str | bytes:
    """The last component of a key as db_key gives it; of the bytes of a name that is not UTF-8, db_key's own."""
    if isinstance(key, str):
        return key.rsplit("/", 1)[-1]
    return db_key(key.rsplit(b"/", 1)[-1])


def event_order(ev: dict) -> int | None:
    """The event's ``order`` (see above), None when it has none.  A malformed one counts as none."""
    value = ev.get("order")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= E.MAX_INT else None


# How far an ``order`` may lie past this host's clock (--order-skew): an order is a time in microseconds since the
# Unix epoch (fc-consume's, the broker's store time) or a count far below one (a stream sequence).  Past that, it
# is no order any writer of ours gave: one forged line with order 2^63-1 made every later event of its file "older
# than recorded" for good (in a shared PostgreSQL record, on every worker).  Bounded so, a forged order holds its
# file back this long at most.  A minute: hosts kept by NTP differ by milliseconds.
ORDER_SKEW = 60.0


def order_limit(skew: float, now: float | None = None) -> int:
    """The largest order trusted now: this host's clock plus ``skew``, in microseconds (at most MAX_INT)."""
    limit = (time.time() if now is None else now) + skew
    return E.MAX_INT if limit >= E.MAX_INT / 1_000_000 else int(limit * 1_000_000)


def version_of(ev: dict) -> tuple[int | None, int | None, int | None]:
    return _int(ev.get("size")), _int(ev.get("mtime_ns")), _int(ev.get("ino"))


def synced_row(ev: dict) -> Synced:
    """The row of a synced event.  Every line fc-record records comes here: the fields are read as they are
    when they are the usual plain strings (_key), not through bytes and back."""
    remote = _key(ev, "remote") if ("remote" in ev or "remote_b64" in ev) else None
    input_file = _key(ev, "path")
    if remote is not None:
        basename = _base(remote)
    elif "name" in ev or "name_b64" in ev:
        basename = _key(ev, "name")
    else:
        basename = _base(input_file)
    processed, hash_, source, event_id = ev.get("processed"), ev.get("hash"), ev.get("source"), ev.get("id")
    return Synced(
        input_file=input_file,
        basename=basename,
        url=str(ev.get("url") or ""),
        server=str(ev["server"]),
        remote=remote,
        size=_int(ev.get("size")),
        mtime_ns=_int(ev.get("mtime_ns")),
        ino=_int(ev.get("ino")),
        remote_size=_remote_size(ev),
        hash=hash_ if isinstance(hash_, str) else None,
        processed=_processed_json(processed) if isinstance(processed, list) and processed else None,
        source=source if isinstance(source, str) else None,
        root=_maybe_path(ev, "root"),
        rel=_maybe_path(ev, "rel"),
        event_id=event_id if isinstance(event_id, str) else None,
    )


def synced_values(ev: dict, now: float) -> tuple:
    """``synced_row(ev).values(now)``, built straight from the event when its path fields are the usual plain
    strings (no ``_b64``): the row of every synced line, without a Synced made and taken apart again.

    ``ev`` is as events.decode gives it, which has checked the type of every known field (events._TYPES, null
    as absent): size, ino and remote_size are ints or None, url, server, hash, source and id strings or None,
    mtime_ns a string of ASCII digits or an int, both within 0..MAX_INT, processed a list.  So they are taken
    as they are, not checked again per line as synced_row's _int and isinstance do."""
    get = ev.get
    path, remote, root, rel = get("path"), get("remote"), get("root"), get("rel")
    if not (
        type(path) is str
        and type(remote) is str
        and type(root) is str
        and type(rel) is str
        and "path_b64" not in ev
        and "remote_b64" not in ev
        and "root_b64" not in ev
        and "rel_b64" not in ev
    ):
        return synced_row(ev).values(now)
    size, remote_size, mtime_ns, processed = get("size"), get("remote_size"), get("mtime_ns"), get("processed")
    if remote_size is None:  # (none given and no work file: _remote_size's answer is the size)
        remote_size = size if "file" not in ev and "file_b64" not in ev else _remote_size(ev)
    return (
        path,
        remote.rsplit("/", 1)[-1],
        get("url") or "",
        ev["server"],
        remote,
        size,
        int(mtime_ns) if type(mtime_ns) is str else mtime_ns,
        get("ino"),
        remote_size,
        get("hash"),
        _processed_json(processed) if processed else None,
        get("source"),
        root,
        rel,
        get("id"),
        now,
    )


_PROCESSED: dict[tuple, str] = {}  # a chain's processor names -> their JSON: a few chains, every line


def _processed_json(processed: list) -> str:
    if not all(type(name) is str for name in processed):
        return json.dumps(processed)
    key = tuple(processed)
    text = _PROCESSED.get(key)
    if text is None:
        if len(_PROCESSED) >= 256:  # forged lines could name endless chains
            _PROCESSED.clear()
        text = _PROCESSED[key] = json.dumps(processed)
    return text


def _remote_size(ev: dict) -> int | None:
    """The size of what was sent: given by fc-transport, or the source's when nothing was processed (else not
    known).  Never looked up at the ``file`` a line names: any path, a hung mount's included, would do."""
    given = _int(ev.get("remote_size"))
    if given is not None:
        return given
    if "file" not in ev and "file_b64" not in ev:
        return _int(ev.get("size"))
    return None
