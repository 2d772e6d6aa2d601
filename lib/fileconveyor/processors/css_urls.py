"""The references in a stylesheet, found and replaced at the token level.

link_updater rewrites ``url()`` and ``@import "..."`` references; the minifiers protect them from their own
quoting bugs.  Only the URL inside each token changes: every other byte of the stylesheet (whitespace, comments,
declarations a parser does not know, such as ``filter: progid:DXImageTransform...``) stays as it was, so a
minified stylesheet stays minified.  No parser and no shared state: safe from any number of threads at once
(cssutils, used before, re-serialised the whole sheet, dropped what it could not parse, and is not thread-safe).

The stylesheet is handled as bytes read as Latin-1, so any byte passes through unchanged whatever the charset
(UTF-8 and every ASCII-compatible charset: the URL's bytes are the file's bytes).  A token is:

- a comment ``/* ... */`` (skipped: a url() in it is no reference);
- ``@import`` followed by a string: a reference;
- any other string: skipped (``content: "url(x)"`` is no reference);
- ``url(`` + optional spaces + a quoted string or an unquoted URL + optional spaces + ``)``: a reference.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

_STRING = r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
_TOKENS = re.compile(
    rf"""
      (?P<comment>/\*.*?(?:\*/|\Z))
    | (?P<import>@import(?P<iws>\s*))(?P<iq>{_STRING})
    | (?P<string>{_STRING})
    | (?<![\w\\-])(?P<open>url\(\s*)(?:(?P<q>{_STRING})|(?P<u>(?:[^)"'\s\\]|\\.)*))(?P<close>\s*\))
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(.))", re.DOTALL)
_UNQUOTED_UNSAFE = re.compile(r"""[\s()'"\\]""")


@dataclass(frozen=True)
class Ref:
    """One reference: its URL (CSS escapes undone) and whether it is an ``@import``."""

    url: str
    is_import: bool


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code) if 0 < code < 0x110000 else "\ufffd"
        return "" if m.group(2) == "\n" else m.group(2)  # an escaped newline continues the string

    return _ESCAPE.sub(one, text) if "\\" in text else text


def _quoted(url: str, quote: str) -> str:
    return quote + url.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\a ") + quote


def _unquoted(url: str) -> str:
    """``url`` fit for ``url(...)`` without quotes: the characters that would end the token percent-encoded."""
    return _UNQUOTED_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("latin-1")), url)


def rewrite(data: bytes, fn: Callable[[Ref], str | None]) -> bytes:
    """``data`` with each reference's URL replaced by ``fn(ref)`` (None: left exactly as it was).  Only the URL
    inside the token changes; its quotes (or their absence) and the spaces around it are kept."""
    text = data.decode("latin-1")
    parts: list[str] = []
    last = 0
    for m in _TOKENS.finditer(text):
        if m.group("comment") is not None or m.group("string") is not None:
            continue
        if m.group("iq") is not None:
            raw, quote = m.group("iq"), m.group("iq")[0]
            new = fn(Ref(_unescape(raw[1:-1]), True))
            if new is None:
                continue
            parts += [text[last : m.start("iq")], _quoted(new, quote)]
            last = m.end("iq")
            continue
        quoted = m.group("q")
        raw = quoted[1:-1] if quoted is not None else m.group("u")
        new = fn(Ref(_unescape(raw), _before_is_import(text, m.start())))
        if new is None:
            continue
        start, end = (m.start("q"), m.end("q")) if quoted is not None else (m.start("u"), m.end("u"))
        parts += [text[last:start], _quoted(new, quoted[0]) if quoted is not None else _unquoted(new)]
        last = end
    if not parts:
        return data
    parts.append(text[last:])
    return "".join(parts).encode("latin-1")


def references(data: bytes) -> list[Ref]:
    """Every reference in ``data``, in order."""
    found: list[Ref] = []

    def note(ref: Ref) -> None:
        found.append(ref)

    rewrite(data, note)  # note returns None: nothing is replaced
    return found


def _before_is_import(text: str, start: int) -> bool:
    return text[max(0, start - 40) : start].rstrip().lower().endswith("@import")


# -- protecting references from a minifier -----------------------------------------------------


def protect(data: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    """(``data`` with every ``url(...)`` replaced by a placeholder, a function that puts them back).

    rcssmin removes the spaces inside ``url("a b.png")`` and YUI those inside a quoted ``data:`` URI; a minifier
    sees ``url(fc<random>uN)`` instead, and ``restore`` puts the original token back (quotes and spaces inside the
    URL kept, spaces around it dropped, as a minifier would)."""
    text = data.decode("latin-1")
    saved: list[str] = []
    tag = "fc" + secrets.token_hex(4)  # not in the stylesheet by chance

    def sub(m: re.Match[str]) -> str:
        if m.group("open") is None:
            return m.group()
        saved.append(m.group("q") if m.group("q") is not None else m.group("u"))
        return f"url({tag}u{len(saved) - 1})"

    protected = _TOKENS.sub(sub, text)
    if not saved:
        return data, lambda out: out

    placeholder = re.compile(rf"url\({tag}u(\d+)\)", re.IGNORECASE)

    def restore(out: bytes) -> bytes:
        def back(m: re.Match[str]) -> str:
            n = int(m.group(1))
            return f"url({saved[n]})" if n < len(saved) else m.group()

        return placeholder.sub(back, out.decode("latin-1")).encode("latin-1")

    return protected.encode("latin-1"), restore
