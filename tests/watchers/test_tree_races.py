"""The tree walk (watchers/tree.py) when a name changes between the directory listing and the looks at it: what it
yields is what is there at its last look, never a mix of two things.

The race is made, not waited for: the walk's own check of where a link leads (links.link_inside, the real one) is
wrapped so that the name is replaced right after it answered, as a deploy putting a real file back over a link
would, at the worst moment.  Seen once in a loaded CI run (tests/security/test_watch_symlinks.py, polling): a real
file reported "symlink-outside-root", a created event with an error, with the real file's own metadata."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fileconveyor.watchers import tree
from fileconveyor.watchers.tree import Filters, walk


def _swap_after_the_check(monkeypatch: pytest.MonkeyPatch, path: Path, replace: object) -> list[bytes]:
    checked: list[bytes] = []
    real_check = tree.link_inside

    def check_then_swap(p: bytes, bases: tuple[bytes, ...]) -> bool:
        answer = real_check(p, bases)
        if p == os.fsencode(path) and not checked:
            replace()  # type: ignore[operator]
        checked.append(p)
        return answer

    monkeypatch.setattr(tree, "link_inside", check_then_swap)
    return checked


def _site_with_an_outside_link(tmp_path: Path) -> Path:
    """site/page.css, a symlink to a file outside the site."""
    site, secret = tmp_path / "site", tmp_path / "secret"
    site.mkdir()
    secret.write_bytes(b"outside")
    os.symlink(secret, site / "page.css")
    return site


def test_a_link_replaced_by_a_real_file_during_the_look_is_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site_with_an_outside_link(tmp_path)
    (tmp_path / "new").write_bytes(b"real again")

    checked = _swap_after_the_check(
        monkeypatch, site / "page.css", lambda: os.replace(tmp_path / "new", site / "page.css")
    )
    got = list(walk(os.fsencode(site), b"", Filters()))

    assert checked == [os.fsencode(site / "page.css")]  # the race happened where it was meant to
    now = os.lstat(site / "page.css")
    assert stat.S_ISREG(now.st_mode)
    assert got == [(b"page.css", now.st_size, now.st_mtime_ns, now.st_ino, 0)]  # the real file, published


def test_a_link_replaced_by_a_directory_during_the_look_is_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site_with_an_outside_link(tmp_path)

    def to_dir() -> None:
        os.unlink(site / "page.css")
        os.mkdir(site / "page.css")

    _swap_after_the_check(monkeypatch, site / "page.css", to_dir)
    assert list(walk(os.fsencode(site), b"", Filters())) == []  # no file there now (its content: the next look)


def test_a_link_outside_that_stays_is_skipped_with_its_own_metadata(tmp_path: Path) -> None:
    site = _site_with_an_outside_link(tmp_path)
    link = os.lstat(site / "page.css")
    assert list(walk(os.fsencode(site), b"", Filters())) == [
        (b"page.css", link.st_size, link.st_mtime_ns, link.st_ino, 1)
    ]


class _SwapOnFilter(Filters):
    """Filters whose file check (the walk's one call between listing a file and its lstat) replaces that file."""

    def __init__(self, path: Path, replace: object) -> None:
        super().__init__(name_globs=["*.never"])
        self._name_re = tree._compile(self.name_globs)
        self.path, self.replace, self.done = os.fsencode(path.name), replace, False

    def skip_file(self, name: bytes, rel: bytes) -> bool:
        if name == self.path and not self.done:
            self.done = True
            self.replace()  # type: ignore[operator]
        return super().skip_file(name, rel)


def test_a_file_replaced_by_a_link_outside_during_the_look_is_not_a_file(tmp_path: Path) -> None:
    site, secret = tmp_path / "site", tmp_path / "secret"
    site.mkdir()
    secret.write_bytes(b"outside")
    (site / "page.css").write_bytes(b"published")
    (site / "keep.css").write_bytes(b"kept")

    def to_link() -> None:
        os.symlink(secret, tmp_path / "tmp-link")
        os.replace(tmp_path / "tmp-link", site / "page.css")

    filters = _SwapOnFilter(site / "page.css", to_link)
    got = list(walk(os.fsencode(site), b"", filters))

    assert filters.done  # the race happened where it was meant to
    assert stat.S_ISLNK(os.lstat(site / "page.css").st_mode)
    # keep.css as it is; page.css not yielded as a file with the link's metadata (the next look says what it is)
    assert [k for k, *_ in got] == [b"keep.css"], got
