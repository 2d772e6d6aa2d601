"""One <server> as fc-transport arguments: each mapping parsed back by fc-transport's own parser (and the
transporter built from it), secrets only in the environment, and real uploads through fc-transport."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from fileconveyor.cli import transport as transport_cli
from fileconveyor.conveyor import config, servers
from fileconveyor.conveyor.config import Server
from fileconveyor.conveyor.servers import ServerSettingsError, TransportArgs, check, transport_args
from fileconveyor.stages.transport.dest import Target, targets_from
from tests.conftest import ROOT, require_tool
from tests.servers.ftpd import PASSWORD, USER, FtpServer, ftp_server  # noqa: F401 - fixture

from .test_config import RULES, minimal, write, write_sample

SECRET = "s3cr3t p@ss:w/rd"


def server(transporter: str, name: str = "my cdn", max_connections: int = 0, **settings: str) -> Server:
    return Server(name, transporter, settings, max_connections, 1)


def parsed(ta: TransportArgs, monkeypatch: pytest.MonkeyPatch) -> Target:
    """What fc-transport makes of ``ta``: its own flag parser, destination parser and transporter class, with
    ``ta.env`` as the whole of the secrets in its environment."""
    for key in list(os.environ):
        if key.startswith(("FC_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in ta.env.items():
        monkeypatch.setenv(key, value)
    pieces = transport_cli.build_parser().parse_args(ta.args).pieces
    assert pieces == ta.pieces  # what servers.check() built its transporter from (the library has no parser)
    (target,) = targets_from(pieces)
    return target


def no_secret_in(args: list[str], *secrets: str) -> None:
    text = " ".join(args)
    for secret in secrets:
        assert secret not in text and secret.replace(" ", "+") not in text
        assert escape(secret) not in text


def test_symlink_or_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    s = server(
        "symlink_or_copy",
        "origin pull cdn",
        location="/srv/cdn root",
        url="http://localhost/static.example.com/",
        symlink_within="/htdocs/drupal:/dl",
    )
    ta = transport_args(s, "static")
    assert ta.env == {}
    t = parsed(ta, monkeypatch)
    assert (t.dest.scheme, t.dest.root, t.name) == ("file", b"/srv/cdn root/static", "origin pull cdn")
    assert t.dest.base_url == "http://localhost/static.example.com/static/"
    assert dict(t.dest.settings) == {"symlink_within": "/htdocs/drupal:/dl"}
    assert t.connections == t.cls.default_connections  # maxConnections 0: fc-transport's default
    # the original's URL: <url> + destination path + the path under the source
    assert t.make().url("css/a b.css") == "http://localhost/static.example.com/static/css/a%20b.css"


def test_ftp_secret_goes_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = server(
        "ftp",
        "ftp push cdn",
        5,
        host="ftp.example",
        username="web@site",
        password=SECRET,
        url="http://localhost/daemontest",
        port="2121",
    )
    ta = transport_args(s, "static")
    no_secret_in(ta.args, SECRET)
    assert ta.env == {"FC_FTP_PUSH_CDN_PASSWORD": SECRET}
    t = parsed(ta, monkeypatch)
    assert (t.dest.scheme, t.dest.host, t.dest.port, t.dest.user) == ("ftp", "ftp.example", 2121, "web@site")
    assert (t.name, t.dest.root, t.connections) == ("ftp push cdn", b"/static", 5)  # the name verbatim
    assert t.dest.secret("password") == SECRET
    assert t.dest.base_url == "http://localhost/daemontest/static/"


@pytest.mark.parametrize(
    ("path", "dest_path", "root"),
    [("", "", b""), ("/htdocs/", "", b"/htdocs/"), ("/htdocs", "static/v2", b"/htdocs/static/v2"), ("", "a", b"/a")],
)
def test_ftp_remote_root(monkeypatch: pytest.MonkeyPatch, path: str, dest_path: str, root: bytes) -> None:
    settings = {"host": "h", "username": "u", "password": "p", "url": "http://h/", "path": path}
    t = parsed(transport_args(server("ftp", **settings), dest_path), monkeypatch)
    assert t.dest.root == root  # b"": the login directory, as the original with no <path>


def test_sftp_with_key_and_native_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("")  # a key_file that does not exist is a configuration error of its own
    s = server(
        "sftp",
        "backup box",
        host="::1",
        username="deploy",
        url="https://static.example/",
        port="2222",
        path="/var/www",
        key=str(key),
        known_hosts=str(tmp_path / "kh"),
        timeout="5",
    )
    ta = transport_args(s, "assets")
    assert ta.env == {}
    t = parsed(ta, monkeypatch)
    assert (t.dest.scheme, t.dest.host, t.dest.port, t.dest.root) == ("sftp", "::1", 2222, b"/var/www/assets")
    assert dict(t.dest.settings) == {"key_file": str(key), "known_hosts": str(tmp_path / "kh"), "timeout": "5"}
    assert t.name == "backup box"


def test_s3_keys_in_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    s = server(
        "s3",
        "amazon",
        4,
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        bucket_name="my-bucket",
        bucket_prefix="site/",
    )
    ta = transport_args(s, "static")
    no_secret_in(ta.args, SECRET, "AKIAEXAMPLE")
    assert ta.env == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET}
    t = parsed(ta, monkeypatch)
    assert (t.dest.scheme, t.dest.host, t.name, t.connections) == ("s3", "my-bucket", "amazon", 4)
    tp = t.make()
    assert tp.key(b"css/a.css") == "site/static/css/a.css"  # type: ignore[attr-defined]


def test_original_cf_is_s3_with_urls_on_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    s = server(
        "cf",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        bucket_name="my-bucket",
        distro_domain_name="d1.cloudfront.net",
    )
    t = parsed(transport_args(s, "static"), monkeypatch)
    assert t.dest.scheme == "s3"
    assert t.make().url(b"css/a.css") == "https://d1.cloudfront.net/static/css/a.css"


def test_cf_with_distribution_id_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    s = server(
        "cf",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        bucket_name="my-bucket",
        bucket_prefix="site",
        distro_domain_name="d1.cloudfront.net",
        distribution_id="E123EXAMPLE",
    )
    t = parsed(transport_args(s, "static"), monkeypatch)
    assert t.dest.scheme == "cf" and t.dest.settings["domain"] == "d1.cloudfront.net"
    tp = t.make()
    assert tp.distribution_id == "E123EXAMPLE"  # type: ignore[attr-defined]
    assert tp.url(b"css/a.css") == "https://d1.cloudfront.net/site/static/css/a.css"


@pytest.mark.parametrize("transporter", ["cloudfiles", "mosso", "cumulus"])
@pytest.mark.parametrize("container", ["static", "Static Files"])
def test_cloudfiles(monkeypatch: pytest.MonkeyPatch, transporter: str, container: str) -> None:
    s = server(transporter, "rackspace", username="me", api_key=SECRET, container=container)
    ta = transport_args(s, "css")
    no_secret_in(ta.args, SECRET)
    assert ta.env == {"FC_RACKSPACE_PASSWORD": SECRET}
    t = parsed(ta, monkeypatch)
    assert (t.dest.scheme, t.dest.user, t.dest.secret("password")) == ("cloudfiles", "me", SECRET)
    tp = t.make()
    assert (tp.container, tp.prefix) == (container, "css/")  # type: ignore[attr-defined]


def test_plugin_transporter_takes_a_to_element(monkeypatch: pytest.MonkeyPatch) -> None:
    # "swift" is a registry alias, not one of the original's names: it takes the URL as <to>
    s = server("swift", "object store", to="swift://me@bucket/base", auth_url="http://127.0.0.1:1/auth/v1.0")
    t = parsed(transport_args(s, "static"), monkeypatch)
    assert (t.dest.scheme, t.dest.root, t.name) == ("swift", b"/base/static", "object store")
    assert dict(t.dest.settings) == {"auth_url": "http://127.0.0.1:1/auth/v1.0"}


def test_env_prefix_is_what_fc_transport_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ftp push cdn", "cdn.example.com", "straße 1"):
        s = server("ftp", name, host="h", username="u", password=SECRET, url="http://h/")
        ta = transport_args(s, "")
        assert list(ta.env) == [servers.env_prefix(name) + "_PASSWORD"]
        assert parsed(ta, monkeypatch).dest.secret("password") == SECRET


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (server("ftp", host="h", username="u", url="u"), "ftp needs <password>"),
        (server("ftp", host="h", username="u", password="p", url="u", key="k"), "ftp has no <key>"),
        (server("ftp", host="h", username="u", password="p", url="u", path="www"), "<path> must start with /"),
        (server("ftp", host="h", username="u", password="p", url="u", port="ftp"), "<port> must be a number"),
        (server("s3", bucket_name="b"), "s3 needs <access_key_id>, <secret_access_key>"),
        (server("cf", access_key_id="a", secret_access_key="s", bucket_name="b"), "cf needs <distro_domain_name>"),
        (server("symlink_or_copy", location="/x", url="u", colour="red"), "unknown setting <colour>"),
        (server("symlink_or_copy", "c", 3, location="/x", url="u", connections="2"), "not both"),
        (server("swift", auth_url="x"), "give <to> with its URL"),
        (server("gopher", to="gopher://x/"), "unknown transporter 'gopher'"),
    ],
)
def test_unmappable(s: Server, expected: str) -> None:
    with pytest.raises(ServerSettingsError) as info:
        transport_args(s, "static")
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (server("symlink_or_copy", "c", 65, location="/x", url="u"), "connections must be between 1 and 64"),
        (server("sftp", host="h", username="u", url="u", timeout="soon"), "timeout must be a number"),
        (server("s3", access_key_id="a", secret_access_key="s", bucket_name="b", presign="soon"), "presign"),
    ],
)
def test_check_refuses_what_fc_transport_refuses(s: Server, expected: str) -> None:
    transport_args(s, "")  # maps...
    with pytest.raises(ServerSettingsError) as info:
        check(s)  # ...but fc-transport would not start with it
    assert expected in str(info.value)


# -- through the real fc-transport --------------------------------------------------------------------


def fc(cmd: str, args: list[str], env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / cmd), *args], input=stdin, capture_output=True, env=env, timeout=60
    )


def created(root: Path, rel: str) -> bytes:
    path = root / rel
    ev = {"v": 1, "kind": "created", "source": "site", "root": str(root), "path": str(path), "rel": rel}
    return json.dumps({**ev, "size": path.stat().st_size}).encode() + b"\n"


def test_ftp_server_from_config_xml(ftp_server: FtpServer, tmp_path: Path) -> None:  # noqa: F811
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "css" / "a b.css").write_text("body{}")
    xml = f"""<?xml version="1.0"?>
<config>
  <sources><source name="site" scanPath="site" /></sources>
  <servers>
    <server name="ftp push cdn" transporter="ftp" maxConnections="2">
      <host>127.0.0.1</host><port>{ftp_server.port}</port>
      <username>{USER}</username><password>{escape(PASSWORD)}</password>
      <url>http://cdn.example/ftp/</url><path>/</path>
    </server>
  </servers>
  <rules>
    <rule for="site" label="all"><destinations><destination server="ftp push cdn" path="static" /></destinations></rule>
  </rules>
</config>
"""
    (tmp_path / "config.xml").write_text(xml, encoding="utf-8")
    (tmp_path / "config.xml").chmod(0o600)  # it holds a password
    c = config.load(tmp_path / "config.xml")
    dest = c.rules[0].destinations[0]
    ta = transport_args(c.servers[dest.server], dest.path)
    no_secret_in(ta.args, PASSWORD)  # the password holds @ : / and non-ASCII letters: it must get through intact
    env = {k: v for k, v in os.environ.items() if not k.startswith("FC_")}
    env.update(ta.env, FC_STATE_DIR=str(tmp_path / "state"))
    out = fc("fc-transport", ta.args, env, created(site, "css/a b.css"))
    assert out.returncode == 0, out.stderr.decode()
    assert (ftp_server.files / "static" / "css" / "a b.css").read_text() == "body{}"
    (ev,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert (ev["server"], ev["url"]) == ("ftp push cdn", "http://cdn.example/ftp/static/css/a%20b.css")
    db = tmp_path / "synced_files.db"
    rec = fc("fc-record", ["--db", str(db)], env, out.stdout)
    assert rec.returncode == 0, rec.stderr.decode()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT input_file, url, server FROM synced_files").fetchall()
    assert rows == [(str(site / "css" / "a b.css"), ev["url"], "ftp push cdn")]


def test_sample_origin_pull_cdn_symlinks_source_files(tmp_path: Path) -> None:
    c = config.load(write_sample(tmp_path))
    drupal = c.sources[0].scan_path
    (drupal / "misc").mkdir()
    (drupal / "misc" / "drupal.js").write_text("var x;")
    css_rule = c.rules[0]
    dest = css_rule.destinations[0]
    ta = transport_args(c.servers[dest.server], dest.path)
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    out = fc("fc-transport", ta.args, env, created(drupal, "misc/drupal.js"))
    assert out.returncode == 0, out.stderr.decode()
    landed = tmp_path / "htdocs" / "static.example.com" / "static" / "misc" / "drupal.js"
    # straight from the source (nothing processed it): a symlink, as the original's symlinkWithin made
    assert landed.is_symlink() and landed.resolve() == drupal / "misc" / "drupal.js"
    (ev,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert (ev["server"], ev["url"]) == ("origin pull cdn", "http://localhost/static.example.com/static/misc/drupal.js")


def test_check_names_a_server_that_does_not_answer_as_config_xml_does(tmp_path: Path) -> None:
    """A newcomer's first --check (README "One config file"): its server "static" at a host that does not resolve
    is named "static" (it hid, being a part of sftp://deploy@static...), and said in words ssh's "Could not
    resolve" once (it said "ssh: ssh: Could not resolve hostname ...")."""
    require_tool("ssh-keygen", "for the server's key (Debian: openssh-client)")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    static = (
        '<servers><server name="static" transporter="sftp"><host>static.invalid</host><username>deploy</username>'
        "<key>key</key><path>/var/www</path><url>https://static.invalid/</url></server></servers>"
    )
    rules = RULES.replace('server="cdn"', 'server="static"')
    path = write(tmp_path, minimal(rules, static))
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-conveyor"), "--check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "warning: static (sftp://deploy@static.invalid/var/www): connect: " in out.stderr
    assert "ssh: ssh:" not in out.stderr
    if "no answer within" not in out.stderr:  # a resolver that answers within the check's wait
        assert "cannot resolve static.invalid: " in out.stderr, out.stderr
