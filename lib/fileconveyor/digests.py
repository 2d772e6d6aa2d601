"""The two hashes the stages use, without ``import hashlib``.

``import hashlib`` loads OpenSSL's libcrypto and sets up each of its digests: about 5 MB of RSS in every
process, paid five times by a five-stage pipeline, for blake2b (event ids, temporary names) and sha256 (state
file names), which Python also has built in.  The built-in ones give the same digests: ``hashlib.blake2b`` *is*
``_blake2.blake2b``, and sha256 is sha256.  An interpreter built without them falls back to hashlib.
Modules that need other digests (md5 for cloud checksums, ...) import hashlib themselves.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without its own blake2
    from hashlib import blake2b

try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.10-3.11
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]  # Python 3.12+
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,no-redef,unused-ignore]

__all__ = ["blake2b", "sha256"]
