"""The command a writer's warning prints to forget a vanished reader (delivery/acks.gone_warning) can be pasted
into bash as printed, whatever bytes the reader's name has: the acks table is untrusted and names are shown
escaped, so the name in the command must be a shell word giving the real bytes back, not the escaped text (which
named no reader: "is not a reader known")."""

from __future__ import annotations

import os
import subprocess

import pytest

from fileconveyor.delivery import acks

NAMES = [
    b"/srv/fc/transport.db",
    b"/srv/fc/with space/t.db",
    b"/srv/fc/quote'and\\backslash.db",
    b"/srv/fc/caf\xc3\xa9.db",  # UTF-8, printable
    b"/srv/fc/new\nline.db",
    b"/srv/fc/\x1b[31mred\x1b[0m.db",  # a terminal's escape sequence
    b"/srv/fc/\xff\xfe.db",  # not UTF-8
    b"/srv/fc/tab\t$(touch x)`id`.db",
]


@pytest.mark.parametrize("raw", NAMES, ids=range(len(NAMES)))
def test_the_word_gives_the_very_bytes_back_in_bash(raw: bytes, tmp_path: os.PathLike[str]) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    word = acks.shell_word(name)
    assert all(0x20 <= b < 0x7F for b in word.encode("utf-8", "surrogateescape")) or word == acks.shlex.quote(name)
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, cwd=tmp_path, check=True)
    assert out.stdout == raw
    assert os.listdir(tmp_path) == []  # nothing in it ran


def test_the_warning_shows_no_control_character_and_names_the_reader_so() -> None:
    name = b"/srv/fc/\x1b[31mred\n.db".decode("utf-8", "surrogateescape")
    k = acks.Known(name, "e", 3, None, 0.0, "s")
    text = acks.gone_warning("fc-watch", "/srv/fc/w.db", k, 8)
    assert "\x1b" not in text and "\n" not in text
    word = text.rpartition(" --forget-reader ")[2]
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True)
    assert out.stdout == name.encode("utf-8", "surrogateescape")
