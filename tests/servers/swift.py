"""A real OpenStack Swift on 127.0.0.1 (the ``swift`` package from PyPI), all in one process a test can kill.

The proxy, account, container and object servers of Swift itself run in one eventlet process, each on its own
loopback port, with one-replica rings built here, tempauth (Rackspace-style v1 auth: X-Auth-User/X-Auth-Key, as
Cloud Files' v1 API) and objects stored under DIR/devices as Swift stores them.  Two small test-only filters
sit in the proxy's pipeline, the only parts not from Swift:

- ``cache``: a dict standing in for memcached, which tempauth keeps its tokens in;
- ``gate``: logs "failed login" when tempauth refuses credentials, and keeps the server's file system view
  FILES/<container>/<object> equal to what Swift holds after each successful PUT or DELETE (written atomically);
  an upload in progress shows as FILES/<container>/<dir>/.fc-upload-<transaction id>, growing as the body
  arrives, removed when the request ends (the counterpart of a temporary file for the contract suite).

Run as ``python -m tests.servers.swift PORT DIR CONTAINER``; the user is test:tester, key in SWIFT_KEY.  Data
survive a restart (as in Swift), and so does the view.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.servers.gate import Tee, capturing, show

USER = "test:tester"
ACCOUNT = "AUTH_test"
CONTAINER = "fc-test"
KEY = "testing-key+plus/slash:colon"  # tempauth splits its config line on spaces: none here
FAILED_LOGIN = "failed login"


class _Cache:
    """The memcache client API tempauth uses, in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, **kw: Any) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any, **kw: Any) -> None:
        self.data[key] = value

    def delete(self, key: str, **kw: Any) -> None:
        self.data.pop(key, None)

    def incr(self, key: str, delta: int = 1, **kw: Any) -> int:
        self.data[key] = int(self.data.get(key) or 0) + delta
        return int(self.data[key])

    def decr(self, key: str, delta: int = 1, **kw: Any) -> int:
        return self.incr(key, -delta)


def cache_filter(global_conf: dict[str, str], **local: str) -> Callable[[Any], Any]:
    cache = _Cache()

    def make(app: Any) -> Any:
        def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            environ["swift.cache"] = cache
            return app(environ, start_response)

        return call

    return make


class Gate:
    def __init__(self, app: Any, files: Path):
        self.app, self.files = app, files
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        status, capture = capturing(start_response)
        if path.startswith("/auth/"):
            body = list(self.app(environ, capture))
            if status and status[0].startswith("401"):
                print(f"{FAILED_LOGIN}: {environ.get('HTTP_X_AUTH_USER')}", file=sys.stderr, flush=True)
            return body
        parts = path.split("/", 4)  # "", "v1", account, container, object
        obj = len(parts) == 5 and parts[4] and method in ("PUT", "DELETE")
        tee = None
        if obj and method == "PUT":
            local = self._local(parts[3], parts[4])
            try:
                local.parent.mkdir(parents=True, exist_ok=True)
                tx = environ.get("swift.trans_id") or f"{threading.get_ident()}"
                tee = environ["wsgi.input"] = Tee(environ["wsgi.input"], local.parent / f".fc-upload-{tx}")
            except OSError:
                pass
        try:
            body = list(self.app(environ, capture))
        finally:
            if tee is not None:
                tee.close()
                os.unlink(tee.out.name)
        if obj and status and status[0][:1] == "2":
            self._mirror(environ, parts)
        return body

    def _local(self, container: str, name: str) -> Path:
        raw = os.fsencode(self.files) + b"/" + unquote(container).encode("latin-1")
        return Path(os.fsdecode(raw + b"/" + name.encode("latin-1")))  # WSGI strings are bytes as latin-1

    def _mirror(self, environ: dict[str, Any], parts: list[str]) -> None:
        """Make FILES/<container>/<object> what Swift holds now (asked through Swift itself)."""
        from swift.common.swob import Request

        # blank() parses its argument as a URL: quoted, a "?" in the name is not a query.
        sub = Request.blank(quote("/".join(parts).encode("latin-1")), environ={"REQUEST_METHOD": "GET"})
        sub.headers["X-Auth-Token"] = environ.get("HTTP_X_AUTH_TOKEN", "")
        sub.environ["swift.cache"] = environ.get("swift.cache")
        resp = sub.get_response(self.app)
        show(self.files, self._local(parts[3], parts[4]), None if resp.status_int == 404 else resp.body, self.lock)


def gate_filter(global_conf: dict[str, str], **local: str) -> Callable[[Any], Any]:
    return lambda app: Gate(app, Path(local["files"]))


SERVER_CONF = """\
[DEFAULT]
devices = {devices}
mount_check = false
disable_fallocate = true
swift_dir = {swift_dir}
recon_cache_path = {swift_dir}
log_level = WARNING
workers = 0

[pipeline:main]
pipeline = {name}-server

[app:{name}-server]
use = egg:swift#{name}
"""

# The proxy's pipeline and the filters both variants share; each adds its own auth filters after it.
PROXY_HEAD = """\
[DEFAULT]
swift_dir = {swift_dir}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper cache %s slo proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:cache]
paste.filter_factory = tests.servers.swift:cache_filter

[filter:slo]
use = egg:swift#slo
"""

PROXY_CONF = (
    PROXY_HEAD % "gate tempauth"
    + """
[filter:gate]
paste.filter_factory = tests.servers.swift:gate_filter
files = {files}

[filter:tempauth]
use = egg:swift#tempauth
user_{tempauth_user} = {key} .admin
"""
)


def main(argv: list[str]) -> None:
    import eventlet

    eventlet.monkey_patch()
    import eventlet.wsgi
    from paste.deploy import loadapp

    port, d, container = int(argv[0]), Path(argv[1]), argv[2]
    key = os.environ["SWIFT_KEY"]
    files = d / "files"
    fresh = not (d / "etc").exists()
    files.mkdir(parents=True, exist_ok=True)
    ports = {"account": int(argv[3]), "container": int(argv[4]), "object": int(argv[5])}
    conf, apps = _build(d, ports)
    proxy_conf = conf / "proxy-server.conf"
    tempauth_user = USER.replace(":", "_")
    proxy_conf.write_text(
        PROXY_CONF.format(swift_dir=conf, files=files, tempauth_user=tempauth_user, key=key.replace("%", "%%"))
    )
    apps.append((port, loadapp(f"config:{proxy_conf}")))
    null = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    # Back ends first, the proxy (the port the fixture waits for) last.
    threads = [
        eventlet.spawn(eventlet.wsgi.server, eventlet.listen(("127.0.0.1", p)), app, log=null) for p, app in apps
    ]
    # The container the tests use, made through Swift's own API once everything listens.
    if fresh:
        import swiftclient

        conn = swiftclient.Connection(f"http://127.0.0.1:{port}/auth/v1.0", USER, key, retries=3)
        conn.put_container(container, headers={"X-Container-Read": ".r:*"})  # public, like a CDN container
    for t in threads:
        t.wait()


# -- the pytest side ------------------------------------------------------------------------------


@dataclass
class SwiftServer:
    process: Any  # tests.servers.process.ServerProcess
    files: Path  # FILES: one folder per container
    auth_url: str  # tempauth's v1.0 endpoint

    @property
    def port(self) -> int:
        return int(self.process.port)


def start_swift_server(d: Path) -> SwiftServer:
    from tests.servers.process import ServerProcess, free_port

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    argv = [sys.executable, "-m", "tests.servers.swift", str(port), str(d), CONTAINER]
    argv += [str(free_port()) for _ in range(3)]
    process = ServerProcess("swift", argv, port, d / "swift.log", {"PYTHONPATH": str(root), "SWIFT_KEY": KEY})
    process.start(timeout=60)
    _wait_for_container(f"http://127.0.0.1:{port}/auth/v1.0")
    return SwiftServer(process, d / "files", f"http://127.0.0.1:{port}/auth/v1.0")


def _wait_for_container(auth_url: str, timeout: float = 30) -> None:
    """The proxy listens before main() has made the container: wait until it is there."""
    import time

    import swiftclient

    deadline = time.monotonic() + timeout
    while True:
        try:
            swiftclient.Connection(auth_url, USER, KEY, retries=0).head_container(CONTAINER)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    from tests.servers.ftpd import _require_module

    for module in ("swift", "swiftclient"):
        _require_module(module)
    server = start_swift_server(tmp_path_factory.mktemp("swift"))
    yield server
    server.process.stop()


# -- a variant behind Keystone (tests/servers/keystone.py) ------------------------------------------

KEYSTONE_PROXY_CONF = (
    PROXY_HEAD % "authtoken keystoneauth"
    + """
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {keystone}
auth_url = {keystone}
auth_type = password
username = admin
password = {password}
project_name = admin
user_domain_id = default
project_domain_id = default
# bootstrap made only a public identity endpoint (authtoken looks for an internal one by default)
interface = public
# anonymous reads of a public (.r:*) container reach keystoneauth, which decides
delay_auth_decision = true
cache = swift.cache

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
"""
)


def _build(d: Path, ports: dict[str, int]) -> tuple[Path, list[tuple[int, Any]]]:
    """Rings (on a first start) and the account, container and object servers, for either proxy."""
    from paste.deploy import loadapp
    from swift.common import utils
    from swift.common.ring import RingBuilder

    conf, devices = d / "etc", d / "devices"
    fresh = not conf.exists()
    for p in (conf, devices / "sdb1"):
        p.mkdir(parents=True, exist_ok=True)
    if fresh:
        (conf / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = fc-test\n[storage-policy:0]\nname = one\ndefault = yes\n"
        )
        for name, p in ports.items():
            builder = RingBuilder(4, 1, 1)  # 16 partitions, 1 replica: one device holds everything
            builder.add_dev(
                {"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": p, "device": "sdb1", "weight": 1}
            )
            builder.rebalance()
            builder.get_ring().save(str(conf / f"{name}.ring.gz"))
    utils.set_swift_dir(str(conf))
    apps: list[tuple[int, Any]] = []
    for name, p in ports.items():
        path = conf / f"{name}-server.conf"
        path.write_text(SERVER_CONF.format(devices=devices, swift_dir=conf, name=name))
        apps.append((p, loadapp(f"config:{path}")))
    return conf, apps


def main_keystone(argv: list[str]) -> None:
    """PORT DIR KEYSTONE_V3_URL ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT; authtoken's password in KEYSTONE_PASSWORD."""
    import eventlet

    eventlet.monkey_patch()
    import eventlet.wsgi
    from paste.deploy import loadapp

    port, d, keystone = int(argv[0]), Path(argv[1]), argv[2]
    ports = {"account": int(argv[3]), "container": int(argv[4]), "object": int(argv[5])}
    conf, apps = _build(d, ports)
    proxy_conf = conf / "proxy-server.conf"
    proxy_conf.write_text(
        KEYSTONE_PROXY_CONF.format(swift_dir=conf, keystone=keystone, password=os.environ["KEYSTONE_PASSWORD"])
    )
    apps.append((port, loadapp(f"config:{proxy_conf}")))
    null = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    threads = [
        eventlet.spawn(eventlet.wsgi.server, eventlet.listen(("127.0.0.1", p)), app, log=null) for p, app in apps
    ]
    for t in threads:
        t.wait()


def start_keystone_swift_server(d: Path, port: int, keystone: str, password: str) -> Any:
    """A Swift on ``port`` whose proxy takes Keystone tokens; returns its ServerProcess (the container is the
    caller's to make, through Keystone)."""
    from tests.servers.process import ServerProcess, free_port

    root = Path(__file__).resolve().parents[2]
    code = "import sys; from tests.servers.swift import main_keystone; main_keystone(sys.argv[1:])"
    argv = [sys.executable, "-c", code, str(port), str(d), keystone, *(str(free_port()) for _ in range(3))]
    env = {"PYTHONPATH": str(root), "KEYSTONE_PASSWORD": password, "PYTHONWARNINGS": "ignore"}
    d.mkdir(parents=True, exist_ok=True)
    process = ServerProcess("swift-keystone", argv, port, d / "swift.log", env)
    process.start(timeout=60)
    return process


if __name__ == "__main__":
    main(sys.argv[1:])
