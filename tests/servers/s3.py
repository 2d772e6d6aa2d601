"""An S3 (and CloudFront) endpoint on 127.0.0.1: moto's server, in a subprocess a test can kill, behind a gate.

moto implements the S3 and CloudFront HTTP APIs (boto3 talks to it exactly as to AWS) but keeps objects in memory
and accepts any credentials.  The gate, a WSGI layer in front of it in the same process, adds what the contract
suite needs from a real store:

- credentials: only the access key given in S3_ACCESS_KEY is accepted; any other gets 403 InvalidAccessKeyId and
  a "failed login" line in the log (the signature itself is not checked);
- anonymous reads: a GET/HEAD without credentials gets the object only when its ACL makes it public, as on S3;
- the server's file system view: after every successful write or delete, the object is written to (or removed
  from) FILES/<bucket>/<key> atomically, so tests read what the store holds as a file.  A multipart upload in
  progress shows as FILES/<bucket>/<dir>/.fc-multipart-<upload id>, growing as parts arrive, and disappears when
  the upload is completed or aborted: the S3 counterpart of a temporary file, so "no .fc-* leftovers" means
  "no abandoned multipart upload";
- digests: a PUT (an object, a part) whose body does not match its Content-MD5, x-amz-checksum-sha256 or signed
  x-amz-content-sha256 is refused with AWS's 400 BadDigest or XAmzContentSHA256Mismatch (moto checks none);
- a request counter: ``GET /__fc__/stats`` answers {"writes": {"bucket/key": n}, "invalidations": n}, the object
  writes (PUT/POST) and CloudFront CreateInvalidation requests that succeeded, so a test can prove that nothing
  was sent (``stats()``); moto's own ``/moto-api/`` (state transitions) passes without credentials.

Run as ``python -m tests.servers.s3 PORT FILES BUCKET...``.  A restarted server starts empty (moto's memory),
with its buckets created again and FILES cleared to match.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

from tests.servers.gate import Tee, capturing, show, unlink_quietly

ACCESS_KEY = "AKIAFCTESTKEY0000001"
SECRET_KEY = "fc-test-secret/with+odd=chars"
WRONG_KEY = "AKIAFCWRONGKEY000001"
PROFILE, WRONG_PROFILE = "fc-test", "fc-wrong"
BUCKET = "fc-test"
FAILED_LOGIN = "failed login"

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def _xml_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()
    )


class Gate:
    def __init__(self, app: Callable[..., Iterable[bytes]], files: Path, access_key: str):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        self.app, self.files, self.access_key = app, files, access_key
        self.backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        self.lock = threading.Lock()
        self.mirror = os.environ.get("S3_MIRROR", "1") != "0"  # 0: no file system view (the benchmark)
        self.writes: Counter[str] = Counter()
        self.invalidations = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        path, _, query = raw.partition("?")
        q = parse_qs(query, keep_blank_values=True)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        found = _CREDENTIAL.search(auth) or _CREDENTIAL.search("Credential=" + q.get("X-Amz-Credential", [""])[0])
        key_id = found.group(1) if found else None
        if path == "/__fc__/stats":
            return self._stats(start_response)
        if path.startswith("/moto-api/"):
            return self.app(environ, start_response)
        is_s3 = not path.startswith("/20")  # CloudFront's API paths start with its version date
        bucket, _, key = unquote(path.lstrip("/"), errors="surrogateescape").partition("/")
        if key_id is None and not (is_s3 and method in ("GET", "HEAD") and key and self._public(bucket, key)):
            return self._refuse(start_response, "AccessDenied", "Access Denied")
        if key_id is not None and key_id != self.access_key:
            print(f"{FAILED_LOGIN}: unknown access key {key_id}", file=sys.stderr, flush=True)
            return self._refuse(start_response, "InvalidAccessKeyId", "The AWS Access Key Id does not exist")
        upload_id = q.get("uploadId", [""])[0]
        tee = None
        if is_s3 and key and method == "PUT" and upload_id and "partNumber" in q and self.mirror:
            part_file = self._local(bucket, key).parent / f".fc-multipart-{upload_id}"
            try:
                part_file.parent.mkdir(parents=True, exist_ok=True)
                tee = environ["wsgi.input"] = Tee(environ["wsgi.input"], part_file)
            except OSError:
                pass  # a file where the view needs a directory: nothing to show
        if is_s3 and key and method == "PUT" and self.mirror and (refused := self._bad_digest(environ)):
            if tee is not None:
                tee.close()
            return self._refuse(start_response, *refused, status="400 Bad Request")
        status, capture = capturing(start_response)
        try:
            body = list(self.app(environ, capture))  # moto does all its work here, before the reply is sent
        finally:
            if tee is not None:
                tee.close()
        ok = bool(status) and status[0].startswith("2")
        with self.lock:
            if is_s3 and key and ok and method in ("PUT", "POST"):
                self.writes[f"{bucket}/{key}"] += 1
            if not is_s3 and ok and method == "POST" and path.rstrip("/").endswith("/invalidation"):
                self.invalidations += 1
        if is_s3 and key and ok and method in ("PUT", "POST", "DELETE") and self.mirror:
            if upload_id and (method == "DELETE" or (method == "POST" and "uploadId" in q)):
                unlink_quietly(self._local(bucket, key).parent / f".fc-multipart-{upload_id}")
            if not (method == "PUT" and upload_id) and not (method == "DELETE" and upload_id):
                self._mirror(bucket, key)
        return body

    def _stats(self, start_response: Callable[..., Any]) -> Iterator[bytes]:
        with self.lock:
            body = json.dumps({"writes": dict(self.writes), "invalidations": self.invalidations}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return iter([body])

    def _refuse(
        self, start_response: Callable[..., Any], code: str, message: str, status: str = "403 Forbidden"
    ) -> Iterator[bytes]:
        body = _xml_error(code, message)
        start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return iter([body])

    def _bad_digest(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """The error code and message AWS answers a PUT (an object, a part) whose body does not match the digests
        its headers give (Content-MD5, x-amz-checksum-sha256, the signed x-amz-content-sha256), or None; moto
        checks none of them.  The body is read here (through the part's Tee: the view still grows as it comes)
        and handed on to moto from memory."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not length:
            return None
        data = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(data)
        md5, checksum = environ.get("HTTP_CONTENT_MD5"), environ.get("HTTP_X_AMZ_CHECKSUM_SHA256")
        signed = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
        if md5 and md5 != base64.b64encode(hashlib.md5(data).digest()).decode():
            return "BadDigest", "The Content-MD5 you specified did not match what we received."
        if checksum and checksum != base64.b64encode(hashlib.sha256(data).digest()).decode():
            return "BadDigest", "The SHA256 you specified did not match the calculated checksum."
        if re.fullmatch(r"[0-9a-f]{64}", signed) and signed != hashlib.sha256(data).hexdigest():
            return (
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        return None

    def _public(self, bucket: str, key: str) -> bool:
        try:
            obj = self.backend.get_object(bucket, key)
        except Exception:
            return False
        return obj is not None and obj.acl is not None and obj.acl.public_read

    def _local(self, bucket: str, key: str) -> Path:
        return Path(os.fsdecode(os.fsencode(self.files / bucket) + b"/" + key.encode("utf-8", "surrogateescape")))

    def _mirror(self, bucket: str, key: str) -> None:
        """Make FILES/<bucket>/<key> what the store holds, atomically (a reader never sees half a file)."""
        try:
            obj = self.backend.get_object(bucket, key)
        except Exception:
            obj = None
        show(self.files, self._local(bucket, key), None if obj is None else obj.value, self.lock)


def main(argv: list[str]) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    port, files, buckets = int(argv[0]), Path(argv[1]), argv[2:]
    shutil.rmtree(files, ignore_errors=True)  # a restarted moto starts empty: so does the view
    files.mkdir(parents=True)
    gate = Gate(DomainDispatcherApplication(create_backend_app), files, os.environ["S3_ACCESS_KEY"])
    for name in buckets:
        gate.backend.create_bucket(name, "us-east-1")
        (files / name).mkdir()
    run_simple("127.0.0.1", port, gate, threaded=True, request_handler=MotoRequestHandler)


# -- the pytest side ------------------------------------------------------------------------------


@dataclass
class S3Server:
    process: Any  # tests.servers.process.ServerProcess
    files: Path  # FILES: one folder per bucket
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # AWS_* variables pointing boto3 at the test's credentials file

    @property
    def port(self) -> int:
        return int(self.process.port)

    def stats(self) -> dict[str, Any]:
        """The gate's request counter (see the module's doc): object writes per bucket/key, invalidations."""
        from urllib.request import urlopen

        with urlopen(f"{self.endpoint}/__fc__/stats", timeout=10) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]

    def writes(self, bucket_key: str) -> int:
        return int(self.stats()["writes"].get(bucket_key, 0))


def start_s3_server(d: Path) -> S3Server:
    """Start the server and write an AWS credentials file with the right (fc-test) and a wrong (fc-wrong) profile."""
    from tests.servers.process import ServerProcess, free_port

    root = Path(__file__).resolve().parents[2]
    creds, config = d / "credentials", d / "config"
    creds.write_text(
        f"[{PROFILE}]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        f"[{WRONG_PROFILE}]\naws_access_key_id = {WRONG_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    config.write_text(f"[profile {PROFILE}]\nregion = us-east-1\n[profile {WRONG_PROFILE}]\nregion = us-east-1\n")
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(config),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    port = free_port()
    argv = [sys.executable, "-m", "tests.servers.s3", str(port), str(d / "files"), BUCKET]
    server_env = {"PYTHONPATH": str(root), "S3_ACCESS_KEY": ACCESS_KEY}
    process = ServerProcess("s3", argv, port, d / "s3.log", server_env)
    process.start(timeout=30)
    return S3Server(process, d / "files", f"http://127.0.0.1:{port}", env)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    from tests.servers.ftpd import _require_module

    for module in ("boto3", "moto", "flask"):  # flask: moto[server]
        _require_module(module)
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    # boto3 in the test process finds the test's credentials file through its usual variables.
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.process.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
