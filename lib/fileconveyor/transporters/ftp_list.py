"""What an FTP directory listing (LIST) says about one entry: a directory, a file, a symbolic link, or absent.

FTP has no lstat.  MLST/MLSD follow links on most servers (pyftpdlib, vsftpd has none), but the Unix-style
LIST that nearly every server sends (``ls -l``'s format) shows a link as itself: ``lrwxrwxrwx ... name -> target``.
That is what the ftp transporter checks a directory with before writing beneath it.  A listing in another format
(IIS's DOS style) cannot tell: UNKNOWN, and the transporter goes on as FTP always did (README).
"""

from __future__ import annotations

from .confine import DIR, FILE, LINK, MISSING, UNKNOWN

UNIX_TYPES = "-dlbcps"  # the first character of an ``ls -l`` line: the file's type


def entry_kind(lines: list[str], name: str) -> str:
    """What ``name`` is according to ``lines``, one listing line each.  Conservative: a link whose line could be
    ``name``'s (``name -> ...``) makes it a LINK, even if another line shows a directory of that name."""
    found, unix = MISSING, False
    for line in lines:
        # type+mode, links, owner, group, size, month, day, time or year, then the name (spaces and all)
        fields = line.split(None, 8)
        if len(fields) < 9 or line[:1] not in UNIX_TYPES:
            continue  # "total 12", or not ls's format
        unix = True
        if line[0] == "l" and fields[8].startswith(name + " -> "):
            return LINK
        if fields[8] == name:
            found = DIR if line[0] == "d" else FILE
    return found if unix or not lines else UNKNOWN
