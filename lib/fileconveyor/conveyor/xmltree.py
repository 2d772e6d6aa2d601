"""A small XML tree with the line number of every element, for config.xml's error messages.

ElementTree keeps no line numbers, and a person fixing config.xml needs them; expat has them, so the tree is
built from expat's callbacks directly.  Comments and processing instructions are dropped, as ElementTree does.
"""

from __future__ import annotations

import itertools
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Node:
    tag: str
    attrib: dict[str, str]
    line: int
    children: list[Node] = field(default_factory=list)
    text: str = ""  # the character data directly inside this element, sub-elements' text excluded

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]


class XMLSyntaxError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def parse(path: Path) -> Node:
    """The root element of the XML file at ``path``; XMLSyntaxError (with line and column) if it is malformed."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Node] = []
    roots: list[Node] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        node = Node(tag, attrib, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def data(text: str) -> None:
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.buffer_text = True
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except xml.parsers.expat.ExpatError as exc:
            # exc.offset is 0-based; editors count columns from 1
            what = xml.parsers.expat.errors.messages[exc.code] if exc.code else str(exc)
            hint = _hint(path, exc.lineno, exc.offset)
            raise XMLSyntaxError(exc.lineno, f"malformed XML: {what} (column {exc.offset + 1}){hint}") from None
    return roots[0]


def _hint(path: Path, lineno: int, offset: int) -> str:
    """What most often makes expat's "invalid token" there, said in words: a newcomer's first config.xml met
    both (an option's ``--`` in a comment, a URL's ``&`` in a setting), and expat names neither."""
    try:
        with open(path, "rb") as f:  # a config file is small, and expat has just read it whole
            raw = next(itertools.islice(f, lineno - 1, None), b"")
    except OSError:
        return ""
    before = raw.decode("utf-8", "replace")[:offset]  # expat's column: where it stopped, just past the token
    if before.endswith("--"):  # outside a comment "--" is plain text: here it is inside one
        return ': "--" may not appear inside a comment <!-- -->; write it another way'
    amp = before.rfind("&")
    if amp >= 0 and ";" not in before[amp:]:
        return ": an & in a value is written &amp; (a URL's ?a=1&b=2 as ?a=1&amp;b=2)"
    return ""
