"""A local destination (file://) that is the watched tree itself, or a folder inside it, and one that cannot be.

Mistakes a new user makes with ``--to``: pointing it at the source folder, or at a folder inside it that fc-watch
does not leave out.  Each sent file was a new file of the tree, so the next scan (or, live, the next moment) sent
it again a level deeper, cdn/cdn/cdn/..., for ever; and with ``symlink_within`` (what fc-conveyor sets) a
destination that is the source tree replaced each source file with a link to itself: the content was gone.  Now
such a file is refused with an error event that says why, and the source is left alone.  Real fc-watch, real
fc-transport, real folders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import fc, lines, tree


def pipeline(site: Path, spec: str, tmp_path: Path, *watch: str, name: str = "") -> tuple[list[int], list[dict], str]:
    """fc-watch --scan-once SITE | fc-transport --to SPEC, each with its own state file in ``tmp_path`` (``name``:
    another one for fc-transport)."""
    w = subprocess.Popen(
        [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), *watch, str(site)],
        stdout=subprocess.PIPE,
    )
    t = subprocess.run(
        [*fc("fc-transport"), "--to", spec, "--state", str(tmp_path / f"t{name}.db")],
        stdin=w.stdout,
        capture_output=True,
        timeout=120,
    )
    assert w.stdout is not None
    w.stdout.close()
    w.wait(60)
    return [w.returncode, t.returncode], lines(t.stdout), t.stderr.decode()


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "css" / "a.css").write_bytes(b"precious\n")
    (site / "b.js").write_bytes(b"also precious\n")
    return site


@pytest.mark.parametrize("spelled", ["as-is", "through-a-symlink", "with-dotdot"])
def test_a_destination_that_is_the_source_tree_never_replaces_a_file_with_a_link_to_itself(
    tmp_path: Path, spelled: str
) -> None:
    """Also when the destination names the tree another way: through a symlink to it, or with a `..` (the
    folders are compared by their real paths)."""
    site = _site(tmp_path)
    before = tree(site)
    dest = {"as-is": site, "through-a-symlink": tmp_path / "alias", "with-dotdot": site / "css" / ".."}[spelled]
    if spelled == "through-a-symlink":
        dest.symlink_to(site)
    status, out, err = pipeline(site, f"file://{dest}?symlink_within={site}", tmp_path)
    assert tree(site) == before, "every source file as it was, none a link to itself"
    assert not any(p.is_symlink() for p in site.rglob("*"))
    assert {ev["rel"] for ev in out} == {"css/a.css", "b.js"}
    assert all("is the source tree" in ev["error"] for ev in out), out
    assert status == [0, 1] and "choose a folder outside it" in err, err


def test_a_destination_inside_the_source_tree_is_not_sent_into_itself(tmp_path: Path) -> None:
    site = _site(tmp_path)
    spec = f"file://{site}/cdn"
    status, out, err = pipeline(site, spec, tmp_path)
    assert status == [0, 0], err
    assert tree(site / "cdn") == {"css/a.css": b"precious\n", "b.js": b"also precious\n"}
    # The next scan finds the copies in cdn/ as new files of the tree: they are not sent again into cdn/cdn/.
    status, out, err = pipeline(site, spec, tmp_path)
    assert not (site / "cdn" / "cdn").exists(), tree(site)
    assert {ev["rel"] for ev in out} == {"cdn/css/a.css", "cdn/b.js"}
    assert all("lies in the destination folder" in ev["error"] for ev in out), out
    assert status == [0, 1] and "fc-watch --exclude 'cdn/*'" in err, err


def test_a_destination_inside_the_source_tree_that_fc_watch_leaves_out_works(tmp_path: Path) -> None:
    site = _site(tmp_path)
    spec = f"file://{site}/cdn"
    for _ in range(2):
        status, out, err = pipeline(site, spec, tmp_path, "--exclude", "cdn/*")
        assert status == [0, 0], err
        assert all("error" not in ev for ev in out), out
    assert tree(site / "cdn") == {"css/a.css": b"precious\n", "b.js": b"also precious\n"}


def test_a_destination_beneath_a_file_is_refused_at_start_and_the_events_stay_unread(tmp_path: Path) -> None:
    """file:///etc/passwd/cdn: the start-up check took it as a folder to be made in /etc, and then every file
    failed for good (ENOTDIR), each kept for --retry-failed."""
    site = _site(tmp_path)
    (tmp_path / "plain").write_bytes(b"a file\n")
    status, out, err = pipeline(site, f"file://{tmp_path}/plain/cdn", tmp_path)
    assert status[1] == 3 and "refused at start" in err and "plain is not a directory" in err, err
    assert out == []
    status, out, err = pipeline(site, f"file://{tmp_path}/cdn", tmp_path, name="2")
    assert status == [0, 0] and len(out) == 2, "the corrected run sends every file"
    assert tree(tmp_path / "cdn") == {"css/a.css": b"precious\n", "b.js": b"also precious\n"}


def test_a_processed_copy_of_a_file_in_the_destination_folder_is_not_sent_into_itself(tmp_path: Path) -> None:
    """The same through fc-process with a chain that changes the content (a banner, a watermark: the event's
    ``file``, a copy in fc-process's work folder): the transporter sees only that copy, so fc-transport looks at
    the event's own path. Before, each scan sent the processed copies one level deeper (cdn/cdn/..., 3 levels in
    3 scans). (A rename-only chain, or one whose output is its input, sends the file itself: refused as above.)"""
    site = _site(tmp_path)
    spec = f"file://{site}/cdn"

    def run() -> tuple[list[dict], str]:
        w = subprocess.Popen(
            [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(site)], stdout=subprocess.PIPE
        )
        p = subprocess.Popen(
            [*fc("fc-process"), "--chain", "cmd:sed -n s/^/x/w{out} {in}", "--state", str(tmp_path / "p.db")],
            stdin=w.stdout,
            stdout=subprocess.PIPE,
        )
        assert w.stdout is not None and p.stdout is not None
        w.stdout.close()
        t = subprocess.run(
            [*fc("fc-transport"), "--to", spec, "--state", str(tmp_path / "t.db")],
            stdin=p.stdout,
            capture_output=True,
            timeout=120,
        )
        p.stdout.close()
        assert w.wait(60) == 0 and p.wait(60) == 0
        return lines(t.stdout), t.stderr.decode()

    out, err = run()
    assert all("error" not in ev for ev in out), err
    assert tree(site / "cdn") == {"css/a.css": b"xprecious\n", "b.js": b"xalso precious\n"}
    out, err = run()  # the next scan finds them as new files of the tree
    assert {ev["rel"] for ev in out} == {f"cdn/{rel}" for rel in tree(site / "cdn")}, err
    assert all("lies in the destination folder" in ev["error"] for ev in out), out
    run()
    assert not (site / "cdn" / "cdn").exists(), tree(site)
