"""fc-verify: check every file fc-record recorded, at its destination and against its source.

Each synced_files row is looked at two ways:

- the destination: by the transporter's own ``stat`` when ``--to`` describes the row's server (local folder,
  SFTP, FTP), else by its public URL (verify_http.py);
- the source: is the file still there, and is it still the version that was synced (size, mtime)?

and judged:

- ``missing``: the source is there, the destination has no file;
- ``different``: the destination's size is not the size of what was sent (a truncated upload), the content's
  SHA-256 differs (``--get``, unprocessed files), or the source changed since it was synced;
- ``stale``: the source is gone but the row is still there (and usually the remote copy too), except for files
  fc-record deleted at the source on purpose (``source_deletions``): their remote copy is meant to stay;
- ``error``: the destination could not be asked (DNS, refused, timeout, TLS, HTTP 5xx): not counted as missing.

With ``--repair``, the events that fix the problems: ``created``/``modified`` for missing and different files
(they upload the source again), ``deleted`` for stale ones (they remove the remote copy and the row).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from ... import events as E
from ...records import Reader, Synced, key_bytes, open_reader
from ...records.model import remote_name
from ...transporters import Destination, TransientError, Transporter, for_destination
from ...transporters.base import PermanentError
from .http import HTTPChecker, Remote


@dataclass(slots=True)
class Finding:
    row: Synced
    problem: str | None  # None: all well
    check: str
    detail: str = ""
    remote: Remote | None = None
    source_size: int | None = None
    expected_size: int | None = None
    stat: os.stat_result | None = None

    def report(self) -> dict:
        r = self.row
        out: dict = {"v": E.VERSION, "problem": self.problem, "server": r.server}
        E.put_path(out, "path", r.path)
        out["url"] = r.url
        if r.remote is not None:
            E.put_path(out, "remote", key_bytes(r.remote))
        out.update({"check": self.check, "detail": self.detail})
        out["expected_size"] = self.expected_size
        out["remote_size"] = self.remote.size if self.remote else None
        out["source_size"] = self.source_size
        return out


def read_rows(db: Reader, servers: Sequence[str] = ()) -> Iterator[Synced]:
    for values in db.rows(servers):
        yield Synced.read(values)


def deleted_by_us(db: Reader) -> set[str | bytes]:
    return db.deleted_by_us()


@dataclass
class Verifier:
    targets: dict[str, Destination]
    http: HTTPChecker
    method: str = "auto"  # auto | stat | http
    ours: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._all: list[Transporter] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        for tp in self._all:
            tp.close()

    # -- the destination ------------------------------------------------------------------------

    def _transporter(self, server: str) -> Transporter:
        per_thread = getattr(self._local, "tps", None)
        if per_thread is None:
            per_thread = self._local.tps = {}
        tp = per_thread.get(server)
        if tp is None:
            tp = per_thread[server] = for_destination(self.targets[server])
            with self._lock:
                self._all.append(tp)
        return tp

    def remote_path(self, row: Synced) -> bytes | None:
        if row.remote:
            return key_bytes(row.remote)
        dest = self.targets.get(row.server)
        if dest is not None and row.url.startswith(dest.base_url):
            return unquote_to_bytes(row.url[len(dest.base_url) :].split("?", 1)[0])
        return remote_name(None, row.rel, row.basename)

    def look(self, row: Synced) -> tuple[str, Remote]:
        use_stat = row.server in self.targets and self.method in ("auto", "stat")
        if self.method == "stat" and not use_stat:
            return "stat", Remote(None, error=f"no --to for server {row.server!r}")
        if not use_stat:
            dest = self.targets.get(row.server)
            if dest is not None and not under_base(row.url, dest.base_url):
                # a recorded URL is what an event said (fc-record stores it as given): with the server's base URL
                # known, one elsewhere (http://169.254.169.254/, an internal port) is a forged row, never fetched
                return "url", Remote(None, error=f"the recorded URL is not under the server's base URL {dest.base_url}")
            return "url", self.http.check(row.url)
        rel = self.remote_path(row)
        if rel is None:
            return "stat", Remote(None, error="the remote path is not recorded and cannot be derived from the URL")
        try:
            st = self._transporter(row.server).stat(rel)
        except (TransientError, PermanentError) as exc:
            return "stat", Remote(None, error=str(exc))
        if st is None:
            return "stat", Remote(False, detail=f"no {rel.decode('utf-8', 'replace')} on {row.server}")
        return "stat", Remote(True, st.size)

    # -- judging --------------------------------------------------------------------------------

    def check(self, row: Synced) -> Finding:
        try:
            st: os.stat_result | None = os.stat(row.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return Finding(row, "error", "source", f"cannot stat the source: {exc.strerror}")
        except ValueError:  # a NUL byte: a row fc-record no longer writes (a forged line), reported, not crashed on
            return Finding(row, "error", "source", "the recorded path holds a NUL byte: no file is named so")
        how, remote = self.look(row)
        f = Finding(row, None, how, remote=remote, source_size=st.st_size if st else None, stat=st)
        f.expected_size = row.remote_size
        if remote.exists is None:
            f.problem, f.detail = "error", remote.error or "unknown"
            return f
        if st is None:
            if row.input_file in self.ours:
                if not remote.exists:
                    f.problem, f.detail = "missing", "deleted at the source after sync, and the remote copy is gone"
                else:
                    f.detail = "deleted at the source after sync; the remote copy stays"
                return f
            f.problem = "stale"
            f.detail = "the source is gone" + (", the remote copy is still there" if remote.exists else "")
            return f
        if not remote.exists:
            f.problem, f.detail = "missing", remote.detail or "not found"
            return f
        if f.expected_size is not None and remote.size is not None and remote.size != f.expected_size:
            f.problem, f.detail = "different", f"the remote file has {remote.size} bytes, {f.expected_size} were sent"
        elif row.size is not None and (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            f.problem, f.detail = "different", "the source changed since it was synced"
        elif remote.sha256 and row.unprocessed and _sha256(row.path) != remote.sha256:
            f.problem, f.detail = "different", "the remote content differs from the source (SHA-256)"
        return f


def under_base(url: str, base: str) -> bool:
    """Whether ``url`` names a file beneath ``base`` (which ends in "/"): it starts with it, and its path from
    there has no "." or ".." segment, even percent-encoded or with backslashes (a server would resolve them to
    a place above the base).  fc-transport makes no such URL."""
    if not base or not url.startswith(base):
        return False
    rest = url[len(base) :].split("?", 1)[0].split("#", 1)[0]
    segments = unquote_to_bytes(rest).replace(b"\\", b"/").split(b"/")
    return not any(seg in (b".", b"..") for seg in segments)


def _sha256(path: bytes) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


# -- repair events ------------------------------------------------------------------------------


def repair_event(findings: list[Finding]) -> dict | None:
    """One event that fixes every problem found for one path (None when no event can)."""
    row = findings[0].row
    if row.source is None or row.root is None or row.rel is None:
        return None
    problems = sorted({f.problem for f in findings if f.problem in ("missing", "different", "stale")})
    if not problems:
        return None
    root, rel = key_bytes(row.root), key_bytes(row.rel)
    st = next((f.stat for f in findings if f.stat is not None), None)
    if "stale" in problems or st is None:
        version = E.FileStat(row.size or 0, row.mtime_ns or 0, row.ino or 0)
        ev = E.file_event("deleted", row.source, root, rel, version, "verify")
        E.put_path(ev, "name", key_bytes(row.basename))  # the remote name, whatever processing made of it
    else:
        kind = "created" if problems == ["missing"] else "modified"
        ev = E.file_event(kind, row.source, root, rel, E.FileStat(st.st_size, st.st_mtime_ns, st.st_ino), "verify")
    # a fresh id: the same as the original event's would be taken for a replay and dropped
    ev["id"] = hashlib.blake2b(b"verify\0%s\0%d" % (row.path, time.time_ns()), digest_size=16).hexdigest()
    ev["repair"] = {"problems": problems, "servers": sorted({f.row.server for f in findings if f.problem})}
    return ev


def processed_names(findings: list[Finding]) -> bool:
    """Whether the remote copy was made by processors (so a repair must go through fc-process again)."""
    return any(f.row.processed or (f.row.remote_size is not None and not f.row.unprocessed) for f in findings)


def open_db(target: str) -> Reader:
    """The record (a file or a postgresql:// URL), read only; ConfigError when it has no synced_files table."""
    db = open_reader(target)
    if not db.has_synced():
        db.close()
        from ...errors import ConfigError

        raise ConfigError(f"{db.name}: no synced_files table (is it fc-record's database?)")
    return db


def dumps(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def run_checks(verifier: Verifier, rows: Iterator[Synced], jobs: int) -> Iterator[Finding]:
    """Check rows on ``jobs`` threads; findings come back in the rows' order (a steady, diffable report)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    window: deque[Future[Finding]] = deque()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        for row in rows:
            window.append(pool.submit(verifier.check, row))
            if len(window) >= jobs * 4:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def extra_files(dest: Destination, known: set[bytes]) -> Iterator[bytes]:
    """Files under a local destination's root that no row names (fc-transport's leftover temporaries included)."""
    root = dest.root or b"."
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel not in known:
                yield rel
