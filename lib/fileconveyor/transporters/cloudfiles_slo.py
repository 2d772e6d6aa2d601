"""cloudfiles: files larger than one Swift object may be (5 GiB), as Static Large Objects.

Swift refuses a single object above 5 GiB.  A larger file goes up in segments (``segment_mb`` MiB each) to the
container ``<container>_segments`` (Swift's and swiftclient's convention, which keeps them out of the
container's listing), each checked against its own MD5, and then a manifest under the file's name joins them.
Readers see the old object until the manifest is in place, then the whole new one: the replacement stays
atomic.  The manifest carries the file's MD5 (``X-Object-Meta-Fc-Md5``), since an SLO's ETag is not the
content's MD5, so that ``skip_unchanged`` still recognises it.

The old object's segments are deleted once the new manifest is in place, and deleting an SLO deletes its
segments (``multipart-manifest=delete``).  A segment upload that fails half-way leaves segments no manifest
names; they are removed right away when the connection still works, otherwise they stay (harmless, billed).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, BinaryIO

from swiftclient.exceptions import ClientException

from ..report import get_logger
from .base import TransientError

log = get_logger(__name__)
MD5_META = "X-Object-Meta-Fc-Md5"
SLO = "x-static-large-object"


class _Slice:
    """At most ``left`` bytes of ``src``, hashed as they are read (a segment is never held in memory)."""

    def __init__(self, src: BinaryIO, left: int):
        self.src, self.left = src, left
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.src.read(n) if n else b""
        self.left -= len(data)
        self.md5.update(data)
        return data


def is_slo(head: dict[str, str] | None) -> bool:
    return head is not None and head.get(SLO, "").lower() == "true"


def put_slo(
    conn: Any,
    container: str,
    key: str,
    src: BinaryIO,
    size: int,
    md5: str,
    segment: int,
    content_type: str,
    headers: dict[str, str],
    old: dict[str, str] | None,
) -> None:
    """Upload ``src`` (``size`` bytes, content MD5 ``md5``) as an SLO of ``segment``-byte segments; ``old`` is the
    HEAD of what the name held before (its segments go once the new manifest is in place)."""
    segments = f"{container}_segments"
    # Whoever may read the container must read the segments too (a public CDN container: everybody), since a
    # GET of the large object fetches them with the reader's rights.  PUT is idempotent: 201, then 202.
    read = conn.head_container(container).get("x-container-read")
    conn.put_container(segments, headers={"X-Container-Read": read} if read else None)
    old_segments = _segments(conn, container, key) if is_slo(old) else []
    prefix = f"{key}/slo/{time.time():.6f}/{size}/{segment}/"
    manifest: list[dict[str, Any]] = []
    try:
        for i in range((size + segment - 1) // segment):
            n = min(segment, size - i * segment)
            part = _Slice(src, n)
            name = f"{prefix}{i:08d}"
            etag = conn.put_object(segments, name, contents=part, content_length=n, chunk_size=1 << 20)
            if part.left or etag != part.md5.hexdigest():  # the file shrank, or the bytes changed on the way
                raise TransientError(f"segment {i} of {key!r} did not arrive as sent (ETag {etag})")
            manifest.append({"path": f"/{segments}/{name}", "etag": etag, "size_bytes": n})
        conn.put_object(
            container,
            key,
            contents=json.dumps(manifest),
            content_type=content_type,
            headers={**headers, MD5_META: md5},
            query_string="multipart-manifest=put",
        )
    except BaseException:
        _delete_quietly(conn, [m["path"] for m in manifest])
        raise
    _delete_quietly(conn, old_segments)


def delete_slo(conn: Any, container: str, key: str) -> None:
    """Delete an SLO's manifest and its segments."""
    conn.delete_object(container, key, query_string="multipart-manifest=delete")


def _segments(conn: Any, container: str, key: str) -> list[str]:
    """The segment paths (``/container/name``) an SLO manifest names."""
    try:
        _, body = conn.get_object(container, key, query_string="multipart-manifest=get")
        return [item["name"] for item in json.loads(body)]
    except (ClientException, ValueError, KeyError, TypeError):
        return []  # gone meanwhile, or not ours to read: nothing to clean up


def _delete_quietly(conn: Any, paths: list[str]) -> None:
    for path in paths:
        seg_container, _, name = path.lstrip("/").partition("/")
        try:
            conn.delete_object(seg_container, name)
        except Exception as exc:  # cleanup only: the upload's own outcome is what counts
            log.warning("could not delete segment %s: %s", path, exc)
