"""A real OpenStack Keystone (the ``keystone`` package from PyPI) on 127.0.0.1, and a real Swift that trusts it.

Keystone runs as OpenStack deploys it, minus Apache: its own WSGI application (keystone.server.wsgi) in a
wsgiref server (one request at a time: sqlite), a sqlite database made by ``keystone-manage db_sync``, fernet
token and credential keys (``fernet_setup``, ``credential_setup``) and ``keystone-manage bootstrap`` (the admin
user, project and role, region RegionOne, Keystone's own identity endpoint).  Then, through its v3 API as admin:

- a domain ``fc-domain`` holding a project ``fc-project`` and a user ``fc-deploy`` (role ``member`` there),
  so that the user_domain/project_domain settings matter: in the Default domain neither name exists;
- the catalog entry of Swift: service type object-store, a public endpoint in RegionOne
  ``http://127.0.0.1:SWIFT_PORT/v1/AUTH_$(project_id)s``.

The Swift (tests.servers.swift.main_keystone) checks tokens with keystonemiddleware's ``authtoken`` and Swift's
own ``keystoneauth`` filter (the stock Keystone pipeline), so the token fc-transport gets from Keystone is
the one Swift validates against Keystone.

One test-only filter sits in front of Keystone: ``gate`` logs "failed login: <user name>" when Keystone refuses
a password (POST /v3/auth/tokens answered 401), so tests can count login attempts.

Run as ``python -m tests.servers.keystone PORT DIR`` with KEYSTONE_ADMIN_PASSWORD set; data survive a restart.
v2.0 auth cannot be tested here: Keystone has not served the v2.0 API since its Queens release (2018).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

REGION = "RegionOne"
DOMAIN = "fc-domain"
PROJECT = "fc-project"
USER = "fc-deploy"
PASSWORD = "deploy pass+word/with:colon"  # sent as JSON by swiftclient: any character goes
ADMIN_PASSWORD = "admin-secret"  # also in the Swift proxy's config (authtoken's service credentials): no "%"
CONTAINER = "fc-test"
FAILED_LOGIN = "failed login"

KEYSTONE_CONF = """\
[DEFAULT]
log_file = {d}/keystone-app.log
[database]
connection = sqlite:///{d}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {d}/fernet-keys
[fernet_receipts]
key_repository = {d}/fernet-keys
[credential]
key_repository = {d}/credential-keys
[identity]
# bcrypt's minimum: the default (12) costs a quarter of a second of CPU per login
password_hash_rounds = 4
[cache]
enabled = false
"""


def _manage(conf: Path, *commands: list[str]) -> None:
    """keystone-manage COMMAND..., each in turn, in one child process: one start-up of Keystone's code, not one
    per command, and none of the state the commands leave behind in the server's process."""
    code = (
        "import sys, json; from tests.servers import keystone as k; "
        "k._manage_here(sys.argv[1], json.loads(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, str(conf), json.dumps(commands)], check=True)


def _manage_here(conf: str, commands: list[list[str]]) -> None:
    from keystone.cmd import cli
    from keystone.conf import CONF

    for command in commands:
        cli.main(argv=["keystone-manage", "--config-file", conf, *command])
        CONF.reset()  # oslo.config parses once per run: forget this command's arguments for the next
        CONF.clear()


class Gate:
    """Logs refused passwords, naming the user (read from the JSON body, which is then replayed)."""

    def __init__(self, app: Any):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO", "").rstrip("/") != "/v3/auth/tokens":
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = BytesIO(body)

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("401"):
                try:
                    user = json.loads(body)["auth"]["identity"]["password"]["user"].get("name")
                except (ValueError, KeyError, TypeError):
                    user = None
                print(f"{FAILED_LOGIN}: {user}", file=sys.stderr, flush=True)
            return start_response(status, headers, exc_info)

        return self.app(environ, capture)  # type: ignore[no-any-return]


def main(argv: list[str]) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    port, d = int(argv[0]), Path(argv[1]).resolve()
    conf, done = d / "keystone.conf", d / "bootstrapped"
    if not done.exists():  # a first start (or one that died setting up: every step can be run again)
        d.mkdir(parents=True, exist_ok=True)
        conf.write_text(KEYSTONE_CONF.format(d=d))
        me = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        owner = ["--keystone-user", me, "--keystone-group", group]
        bootstrap = ["bootstrap", "--bootstrap-password", os.environ["KEYSTONE_ADMIN_PASSWORD"]]
        bootstrap += ["--bootstrap-region-id", REGION, "--bootstrap-public-url", f"http://127.0.0.1:{port}/v3"]
        _manage(conf, ["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner], bootstrap)
        done.touch()
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
    sys.argv[1:] = []  # Keystone's oslo.config parses the command line too
    from keystone.server.wsgi import initialize_public_application

    app = Gate(initialize_public_application())

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the access log is noise; errors still print
            pass

    # One request at a time: concurrent logins make Keystone write to sqlite at once ("database is locked",
    # a 500) where a deployment has MySQL.  Keystone never calls back into Swift, so nothing waits on itself.
    httpd = make_server("127.0.0.1", port, app, handler_class=Quiet)
    httpd.serve_forever()


# -- the pytest side ------------------------------------------------------------------------------


@dataclass
class KeystoneSwift:
    keystone: Any  # tests.servers.process.ServerProcess
    swift: Any  # tests.servers.process.ServerProcess, the Swift whose proxy trusts this Keystone
    auth_url: str  # Keystone's v3 endpoint, http://127.0.0.1:PORT/v3
    storage_url: str  # the object-store endpoint of fc-project, as the catalog gives it
    project_id: str

    @property
    def swift_port(self) -> int:
        return int(self.swift.port)


def _api(base: str, method: str, path: str, token: str | None = None, body: dict | None = None) -> Any:
    import requests

    headers = {"X-Auth-Token": token} if token else {}
    r = requests.request(method, base + path, json=body, headers=headers, timeout=30)
    r.raise_for_status()
    return r


def _admin_token(base: str) -> str:
    scope = {"project": {"name": "admin", "domain": {"id": "default"}}}
    user = {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}, "scope": scope}}
    return str(_api(base, "POST", "/v3/auth/tokens", body=body).headers["X-Subject-Token"])


def _provision(base: str, swift_port: int) -> str:
    """The deploy user in its own domain, and Swift in the catalog; returns fc-project's id."""
    token = _admin_token(base)

    def post(path: str, kind: str, **fields: Any) -> str:
        return str(_api(base, "POST", path, token, {kind: fields}).json()[kind]["id"])

    domain = post("/v3/domains", "domain", name=DOMAIN)
    project = post("/v3/projects", "project", name=PROJECT, domain_id=domain)
    user = post("/v3/users", "user", name=USER, domain_id=domain, password=PASSWORD, default_project_id=project)
    roles = _api(base, "GET", "/v3/roles?name=member", token).json()["roles"]
    _api(base, "PUT", f"/v3/projects/{project}/users/{user}/roles/{roles[0]['id']}", token)
    service = post("/v3/services", "service", type="object-store", name="swift")
    url = f"http://127.0.0.1:{swift_port}/v1/AUTH_$(project_id)s"
    post("/v3/endpoints", "endpoint", service_id=service, interface="public", url=url, region_id=REGION)
    return project


def start_keystone_swift(d: Path) -> KeystoneSwift:
    from tests.servers.process import ServerProcess, free_port
    from tests.servers.swift import start_keystone_swift_server

    root = Path(__file__).resolve().parents[2]
    port, swift_port = free_port(), free_port()
    argv = [sys.executable, "-m", "tests.servers.keystone", str(port), str(d / "keystone")]
    env = {"PYTHONPATH": str(root), "KEYSTONE_ADMIN_PASSWORD": ADMIN_PASSWORD, "PYTHONWARNINGS": "ignore"}
    keystone = ServerProcess("keystone", argv, port, d / "keystone.log", env)
    keystone.start(timeout=120)  # keystone-manage's four steps come first
    base, swift = f"http://127.0.0.1:{port}", None
    try:
        project = _provision(base, swift_port)
        swift = start_keystone_swift_server(d / "swift", swift_port, f"{base}/v3", ADMIN_PASSWORD)
        storage = f"http://127.0.0.1:{swift_port}/v1/AUTH_{project}"
        server = KeystoneSwift(keystone, swift, f"{base}/v3", storage, project)
        _make_container(server)
    except BaseException:
        if swift is not None:
            swift.stop()
        keystone.stop()  # no server left behind by a setup that failed half-way
        raise
    return server


def connection(server: KeystoneSwift, **overrides: Any) -> Any:
    """A swiftclient connection as fc-deploy, through Keystone v3."""
    import swiftclient

    options = {
        "user_domain_name": DOMAIN,
        "project_domain_name": DOMAIN,
        "project_name": PROJECT,
        "region_name": REGION,
    }
    return swiftclient.Connection(
        authurl=server.auth_url,
        user=USER,
        key=PASSWORD,
        auth_version="3",
        os_options={**options, **overrides},
        retries=0,
    )


def _make_container(server: KeystoneSwift, timeout: float = 30) -> None:
    """Public reads (.r:*), as a CDN container; retried while the proxy starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection(server).put_container(CONTAINER, headers={"X-Container-Read": ".r:*"})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def keystone_swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneSwift]:
    from tests.servers.ftpd import _require_module

    for module in ("keystone", "keystonemiddleware", "swift", "swiftclient"):
        _require_module(module)
    d = tmp_path_factory.mktemp("keystone")
    server = start_keystone_swift(d)
    yield server
    server.swift.stop()
    server.keystone.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
