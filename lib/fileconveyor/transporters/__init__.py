"""Transporters: put files on servers.  ``TRANSPORTERS.get("sftp")`` gives the class; modules load on first use.

Third parties plug in through the ``fileconveyor.transporters`` entry-point group or a ``package.module:Class``
path; _template.py shows how to write one.
"""

from __future__ import annotations

from ..registry import Registry
from .base import (
    UNCHANGED,
    UPLOADED,
    AuthError,
    PermanentError,
    RemoteStat,
    SourceMissing,
    TransientError,
    Transporter,
)
from .destination import Destination, parse_destination

__all__ = [
    "TRANSPORTERS",
    "UNCHANGED",
    "UPLOADED",
    "AuthError",
    "Destination",
    "PermanentError",
    "RemoteStat",
    "SourceMissing",
    "TransientError",
    "Transporter",
    "for_destination",
    "parse_destination",
]

TRANSPORTERS: Registry[Transporter] = Registry(
    "transporter",
    "fileconveyor.transporters",
    Transporter,
    {
        "symlink_or_copy": "fileconveyor.transporters.local:SymlinkOrCopy",
        "ftp": "fileconveyor.transporters.ftp:FTP",
        "sftp": "fileconveyor.transporters.sftp:SFTP",
        "s3": "fileconveyor.transporters.s3:S3",
        "cf": "fileconveyor.transporters.cf:CloudFront",
        "cloudfiles": "fileconveyor.transporters.cloudfiles:CloudFiles",
    },
    # URL schemes name their transporter, so "file:///srv/cdn" needs no separate --transporter.
    aliases={"file": "symlink_or_copy", "ftps": "ftp", "cloudfront": "cf", "swift": "cloudfiles"},
)


def for_destination(dest: Destination) -> Transporter:
    """A transporter for ``dest``, chosen by its URL scheme."""
    return TRANSPORTERS.get(dest.scheme)(dest)
