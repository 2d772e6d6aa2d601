"""What goes into an S3 request's body, and the hashes that tie it to fc-transport's one read of the file.

s3.py hashes each file once (its SHA-256, stored as the object's ``fc-sha256`` metadata; the SHA-256 of each part
of a multipart upload, PartHashes); botocore would hash the body again to sign it, and to AWS would send only a
CRC32 of what it read while sending.  known_body_hash and _payload_hash give the signature our read's hash, so the
store checks what arrives against what we hashed (another version of the file is refused).  FullReads and
expect_for_large_bodies shape how s3transfer and botocore send bodies.
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

import botocore.auth
import botocore.utils

HASH_KEY = "fc-sha256"  # object metadata holding the content's SHA-256, for skip_unchanged


class FullReads:
    """read(n) that returns n bytes unless the stream ends.  s3transfer takes a short first read from a pipe
    (64 KiB) for "smaller than the multipart threshold": it then holds the whole stream in memory for one PUT,
    and short reads later make parts below S3's 5 MiB minimum (EntityTooSmall)."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return read_all(self.raw)
        chunks, left = [], n
        while left > 0 and (chunk := self.raw.read(left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


class PartHashes:
    """The SHA-256 of each ``size``-byte part of what is fed to it: s3transfer's parts (same ChunksizeAdjuster)."""

    def __init__(self, size: int):
        self.size, self.left, self.sha = size, size, hashlib.sha256()
        self.done: list[bytes] = []

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while len(view) >= self.left:  # this chunk ends a part
            self.sha.update(view[: self.left])
            view, self.left = view[self.left :], self.size
            self.done.append(self.sha.digest())
            self.sha = hashlib.sha256()
        self.sha.update(view)
        self.left -= len(view)

    def digests(self) -> list[bytes]:
        return self.done + ([self.sha.digest()] if self.left < self.size else [])


def read_all(src: BinaryIO) -> bytes:
    chunks = []
    while chunk := src.read(1 << 20):  # unbuffered: read() may return less than asked
        chunks.append(chunk)
    return b"".join(chunks)


KNOWN_SHA256 = "fc_body_sha256"  # a request's context: the SHA-256 of its body, hashed by _upload


def known_body_hash(params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
    """Our PutObject carries its body's SHA-256 as metadata (_upload hashed the body it sends); the signature
    signs the same hash (x-amz-content-sha256), which botocore would compute with one more pass over the file."""
    digest = (params.get("Metadata") or {}).get(HASH_KEY)
    if digest:
        context[KNOWN_SHA256] = digest


def _payload_hash(self: Any, request: Any) -> str:
    """S3SigV4Auth.payload, taking the hash known_body_hash found where the body is to be signed.  A wrong hash
    cannot slip through: the store checks the body against the signed one and refuses the upload."""
    known = request.context.get(KNOWN_SHA256)
    if known and not self._is_streaming_checksum_payload(request) and self._should_sha256_sign_payload(request):
        return str(known)
    return _botocore_payload(self, request)  # type: ignore[no-any-return]


_signer = botocore.auth.S3SigV4Auth
_botocore_payload = getattr(_signer, "_fc_botocore_payload", _signer.payload)  # this module imported again
_signer._fc_botocore_payload = _botocore_payload  # type: ignore[attr-defined]
if all(hasattr(_signer, n) for n in ("_is_streaming_checksum_payload", "_should_sha256_sign_payload")):
    _signer.payload = _payload_hash  # type: ignore[method-assign]
# (else a botocore that works differently: it hashes the body itself, as it always did; only slower)


EXPECT_ABOVE = 1 << 20  # bytes: a body above this asks the store first (a refusal then costs no upload)


def expect_for_large_bodies(model: Any, params: dict[str, Any], **kwargs: Any) -> None:
    body = params.get("body")
    large = hasattr(body, "read") and (botocore.utils.determine_content_length(body) or 0) > EXPECT_ABOVE
    if large and model.http.get("method") in ("PUT", "POST"):
        params["headers"]["Expect"] = "100-continue"
