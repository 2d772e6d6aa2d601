"""fc-transport (the command, as users run it) to cloudfiles:// with Keystone v3 authentication, against a real
OpenStack Keystone and a real Swift that validates Keystone's tokens (tests/servers/keystone.py).

The deploy user and its project live in their own domain (fc-domain), so the user_domain, project_domain,
tenant and region settings each have to reach Keystone for a login to succeed.  Keystone no longer serves the
v2.0 API (removed in its Queens release), so auth_version 2 has no real server to be tested against."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.conftest import ROOT
from tests.servers import keystone as ks
from tests.servers.keystone import KeystoneSwift, keystone_swift  # noqa: F401 - fixture

from .conftest import _unique, events_for

NAME = "ks"  # the destination's name: its password is in FC_KS_PASSWORD


def _dest(server: KeystoneSwift, prefix: str, **overrides: str) -> str:
    settings = {
        "name": NAME,
        "auth_url": server.auth_url,
        "auth_version": "3",
        "tenant": ks.PROJECT,
        "user_domain": ks.DOMAIN,
        "project_domain": ks.DOMAIN,
        "region": ks.REGION,
        "timeout": "10",
        **overrides,
    }
    settings = {k: v for k, v in settings.items() if v}  # "" drops a setting
    return f"cloudfiles://{ks.USER}@{ks.CONTAINER}/{prefix}?{urlencode(settings)}"


def _transport(
    dest: str, events: bytes, tmp_path: Path, password: str = ks.PASSWORD, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, f"FC_{NAME.upper()}_PASSWORD": password, "FC_STATE_DIR": str(tmp_path / "state")}
    env.pop("FC_PASSWORD", None)
    argv = [sys.executable, str(ROOT / "bin" / "fc-transport"), "--to", dest, *extra]
    return subprocess.run(argv, input=events, capture_output=True, env=env, timeout=120)


def _get(url: str) -> tuple[int, bytes]:
    """A plain anonymous HTTP GET, as a browser would fetch the file (the container is public: .r:*)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _failed_logins(server: KeystoneSwift) -> int:
    return server.keystone.log.read_text(errors="replace").count(f"{ks.FAILED_LOGIN}: {ks.USER}")


def test_upload_fetch_delete_with_keystone_v3(keystone_swift: KeystoneSwift, tmp_path: Path) -> None:  # noqa: F811
    server = keystone_swift
    files = {"css/a b.css": b"body { color: red }", "img/logo.svg": b"<svg/>" * 1000}
    root = tmp_path / "site"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    prefix = _unique()
    dest = _dest(server, prefix)

    up = _transport(dest, events_for(root, list(files)), tmp_path)
    assert up.returncode == 0, up.stderr.decode()
    outs = {ev["rel"]: ev for ev in map(json.loads, up.stdout.splitlines())}
    assert {rel: ev["transported"] for rel, ev in outs.items()} == dict.fromkeys(files, "uploaded")
    for rel, data in files.items():
        # the storage URL of fc-project's account, as Keystone's catalog (region RegionOne) gave it
        want = f"{server.storage_url}/{ks.CONTAINER}/{quote(prefix + '/' + rel)}"
        assert outs[rel]["url"] == want
        assert _get(want) == (200, data)

    # What Swift holds, asked with a token of Keystone's: the project's account, MD5 and type as sent
    conn = ks.connection(server)
    head = conn.head_object(ks.CONTAINER, f"{prefix}/css/a b.css")
    assert head["content-length"] == str(len(files["css/a b.css"])) and head["content-type"] == "text/css"
    assert conn.url == server.storage_url

    (root / "css/a b.css").unlink()  # gone at the source (a deletion of a file still there deletes nothing)
    gone = _transport(dest, events_for(root, ["css/a b.css"], "deleted"), tmp_path)
    assert gone.returncode == 0, gone.stderr.decode()
    assert [json.loads(line)["transported"] for line in gone.stdout.splitlines()] == ["deleted"]
    assert _get(outs["css/a b.css"]["url"])[0] == 404
    assert _get(outs["img/logo.svg"]["url"]) == (200, files["img/logo.svg"])  # the other one stays
    conn.close()


@pytest.mark.parametrize(
    ("overrides", "password"),
    [
        ({"connections": "1"}, ks.PASSWORD + "x"),
        # the user exists only in fc-domain: looked up in the Default domain it is unknown to Keystone
        ({"connections": "1", "user_domain": "", "project_domain": ""}, ks.PASSWORD),
        # 8 connections: still one login at start, not one per connection
        ({}, ks.PASSWORD + "x"),
    ],
    ids=["wrong-password", "no-domain", "wrong-password-8-connections"],
)
def test_refused_login_is_refused_at_start(
    keystone_swift: KeystoneSwift,  # noqa: F811
    tmp_path: Path,
    overrides: dict[str, str],
    password: str,
) -> None:
    """The login is tried before any event is read: exit 3 naming the destination and Keystone's refusal, no
    event taken in (they stay with their writer), one login attempt, no back-off."""
    server = keystone_swift
    root = tmp_path / "site"
    rels = [f"f{i}.txt" for i in range(5)]
    root.mkdir()
    for rel in rels:
        (root / rel).write_bytes(rel.encode())
    before = _failed_logins(server)
    started = time.monotonic()
    r = _transport(_dest(server, _unique(), **overrides), events_for(root, rels), tmp_path, password)
    elapsed = time.monotonic() - started
    stderr = r.stderr.decode()
    assert r.returncode == 3, stderr
    assert r.stdout == b""
    assert stderr.startswith("fc-transport: error: refused at start: ks (cloudfiles://"), stderr
    assert stderr.count(f"credentials refused by {server.auth_url}") == 1, stderr
    assert password not in stderr
    assert elapsed < 30, f"{elapsed:.1f} s"  # no back-off: a refusal is no outage
    time.sleep(0.3)  # time for a late attempt to show, were there one
    assert _failed_logins(server) - before == 1


def test_unknown_region_is_refused_at_start(keystone_swift: KeystoneSwift, tmp_path: Path) -> None:  # noqa: F811
    # The login succeeds, but the catalog has no object-store endpoint in that region: a setting to fix, found
    # by the start-up check (exit 3) before any event is read.
    root = tmp_path / "site"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    started = time.monotonic()
    dest = _dest(keystone_swift, _unique(), region="RegionNowhere")
    r = _transport(dest, events_for(root, ["a.txt"]), tmp_path)
    assert r.returncode == 3, r.stderr.decode()
    assert r.stdout == b"" and "no object-store endpoint in region 'RegionNowhere'" in r.stderr.decode()
    assert time.monotonic() - started < 30


def test_keystone_down_keeps_the_work_queued(keystone_swift: KeystoneSwift, tmp_path: Path) -> None:  # noqa: F811
    # Keystone unreachable is an outage, not a refusal: nothing fails, the files wait for the next run.
    server = keystone_swift
    root = tmp_path / "site"
    root.mkdir()
    (root / "a.txt").write_bytes(b"queued")
    dest = _dest(server, _unique())
    server.keystone.kill()
    try:
        down = _transport(dest, events_for(root, ["a.txt"]), tmp_path, ks.PASSWORD, "--drain-timeout", "2")
    finally:
        server.keystone.start(timeout=60)
    assert down.returncode == 4, down.stderr.decode()  # work still queued
    assert down.stdout == b"" and "connection failed" in down.stderr.decode()

    again = _transport(dest, b"", tmp_path)  # no new input: the state file holds the queued file
    assert again.returncode == 0, again.stderr.decode()
    (ev,) = map(json.loads, again.stdout.splitlines())
    assert ev["rel"] == "a.txt" and ev["transported"] == "uploaded"
    assert _get(ev["url"]) == (200, b"queued")
