"""What the cloud transporters (s3, cf, cloudfiles) do beyond the shared contract, against the same real servers:
headers, ACLs and the URLs a plain HTTP GET fetches, skip_unchanged, batched CloudFront invalidations."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import botocore.auth
import botocore.awsrequest
import pytest

from fileconveyor.errors import ConfigError
from fileconveyor.transporters import (
    AuthError,
    PermanentError,
    TransientError,
    Transporter,
    for_destination,
    parse_destination,
)
from fileconveyor.transporters.cf import MAX_PATHS, CloudFront
from fileconveyor.transporters.cf_setup import create_distribution
from fileconveyor.transporters.s3 import S3
from tests.servers import s3 as s3srv
from tests.servers import swift as swiftsrv

from .conftest import Backend


def _plain(backend: Backend, **settings: str) -> Transporter:
    """The backend's transporter without --url: the URLs are the transporter's own."""
    spec = backend.spec + "?" + urlencode({**backend.settings, **settings})
    tp = for_destination(parse_destination(spec, env=backend.env))
    backend.opened.append(tp)
    return tp


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # anonymous: no credentials at all
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def _s3_client(server: s3srv.S3Server):  # type: ignore[no-untyped-def]
    return boto3.Session(profile_name=s3srv.PROFILE).client("s3", endpoint_url=server.endpoint)


def test_s3_headers_acl_and_plain_url(s3_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    src = tmp_path / "site.css"
    src.write_bytes(b"body { color: red }")
    tp = _plain(s3_backend, cache_control="public, max-age=315360000")
    tp.upload(src, b"css/site.css")
    url = tp.url(b"css/site.css")
    sub = s3_backend.spec.rsplit("/", 1)[1]
    assert url == f"{s3_server.endpoint}/{s3srv.BUCKET}/{sub}/css/site.css"  # plain: no signature, no expiry
    status, body, headers = _get(url)
    assert (status, body) == (200, b"body { color: red }")
    assert headers["content-type"] == "text/css"
    assert headers["cache-control"] == "public, max-age=315360000"
    head = _s3_client(s3_server).head_object(Bucket=s3srv.BUCKET, Key=f"{sub}/css/site.css")
    assert len(head["Metadata"]["fc-sha256"]) == 64


def test_s3_private_objects_need_a_presigned_url(s3_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "secret.txt"
    src.write_bytes(b"not for everyone")
    tp = _plain(s3_backend, acl="none", presign="600")
    tp.upload(src, b"secret.txt")
    plain = S3(tp.dest).public_base()
    assert _get(plain + s3_backend.spec.rsplit("/", 1)[1] + "/secret.txt")[0] == 403
    url = tp.url(b"secret.txt")
    assert "X-Amz-Expires=600" in url
    assert _get(url)[:2] == (200, b"not for everyone")


def test_s3_skip_unchanged(s3_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a.js"
    src.write_bytes(b"var a = 1;")
    tp = _plain(s3_backend, skip_unchanged="yes")
    assert isinstance(tp, S3)
    tp.upload(src, b"a.js")
    assert not tp.skipped
    tp.upload(src, b"a.js")
    assert tp.skipped  # same content: nothing sent
    src.write_bytes(b"var a = 2;")
    tp.upload(src, b"a.js")
    assert not tp.skipped
    assert (s3_backend.files / "a.js").read_bytes() == b"var a = 2;"


def test_s3_look_first_skips_what_is_there_once(s3_backend: Backend, tmp_path: Path) -> None:
    """upload(look_first=True) (fc-transport's retry of work a killed process may have done) checks as
    skip_unchanged would, for that call only."""
    src = tmp_path / "a.js"
    src.write_bytes(b"var a = 1;")
    tp = _plain(s3_backend)
    assert tp.upload(src, b"a.js", look_first=True) == "uploaded"  # not there yet
    assert tp.upload(src, b"a.js", look_first=True) == "unchanged"
    assert tp.upload(src, b"a.js") == "uploaded"  # the setting is off again


def test_s3_big_file_skip_unchanged_uses_the_stored_hash(
    s3_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 << 20))  # multipart: the ETag is no MD5, the metadata hash decides
    tp = _plain(s3_backend, skip_unchanged="yes", multipart_mb="8")
    assert isinstance(tp, S3)
    tp.upload(src, b"big.bin")
    tp.upload(src, b"big.bin")
    assert tp.skipped
    assert (s3_backend.files / "big.bin").read_bytes() == src.read_bytes()
    key = s3_backend.spec.rsplit("/", 1)[1] + "/big.bin"
    assert _s3_client(s3_server).head_object(Bucket=s3srv.BUCKET, Key=key)["ETag"].endswith('-2"')


def test_s3_a_put_is_signed_with_the_hash_of_its_one_read(
    s3_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PUT's signature carries the SHA-256 of its body (x-amz-content-sha256: the store refuses another body);
    # botocore hashed the file for it once more after the transporter's own pass (for the fc-sha256 metadata)
    # and an MD5 pass for Content-MD5: 3 passes over each file.  Now one: the metadata's hash is the signed one.
    # A multipart upload's parts are signed with the hashes of the parts of that same read (one more pass there).
    tp = _plain(s3_backend, multipart_mb="5")
    assert isinstance(tp, S3)
    real, hashed = botocore.auth.sha256, []

    class Counting:  # botocore's sha256, counting the bytes it hashes
        def __init__(self, data: bytes = b"") -> None:
            self.h = real(data)
            hashed.append(len(data))

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self.h.update(data)

        def __getattr__(self, name: str) -> Any:  # digest, digest_size...: hmac uses it too
            return getattr(self.h, name)

    monkeypatch.setattr(botocore.auth, "sha256", Counting)
    sent: list[tuple[str, dict[str, str]]] = []

    def seen(request: Any, event_name: str, **kwargs: Any) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((event_name.rsplit(".", 1)[1], headers))

    tp.client().meta.events.register("before-send.s3", seen)
    files = {"small.txt": b"tiny", "mid.bin": os.urandom(2 << 20), "big.bin": os.urandom(6 << 20)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        tp.upload(tmp_path / name, name.encode())
        assert (s3_backend.files / name).read_bytes() == data
        if name == "mid.bin":
            assert sum(hashed) < 1 << 16  # requests' canonical forms only, not the 2 MiB body
    puts = [h for op, h in sent if op == "PutObject"]
    assert [h["x-amz-content-sha256"] for h in puts] == [hashlib.sha256(files[n]).hexdigest() for n in files][:2]
    assert all("content-md5" not in h for h in puts)
    parts = [h for op, h in sent if op == "UploadPart"]
    assert [h["x-amz-content-sha256"] for h in parts] == [hashlib.sha256(files["big.bin"]).hexdigest()]
    assert sum(hashed) < 1 << 16  # that one, our read hashed: botocore did not


def _to_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str) -> S3:
    """An s3:// transporter to AWS itself (no endpoint_url) with made-up credentials: its requests must be
    answered before they leave (there is no AWS here)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    tp = for_destination(parse_destination("s3://bucket/pfx?region=us-east-1" + settings, env={}))
    assert isinstance(tp, S3)
    return tp


def test_s3_a_put_to_aws_asks_the_store_to_check_the_hash_of_its_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # To AWS over HTTPS botocore signs no body: a file body went with a CRC32 trailer of what botocore read while
    # sending, and nothing tied it to the SHA-256 of our read (the fc-sha256 metadata) since Content-MD5 was
    # dropped (d5a6231): a file rewritten in between, size and mtime kept, was stored under the old hash.  The
    # request is built and signed for real, and answered before it leaves (no AWS here): its checksum header
    # must be our read's SHA-256, which AWS checks against the body it receives.
    tp = _to_aws(tmp_path, monkeypatch, "")
    sent: list[dict[str, str]] = []

    def answer(request: Any, **kwargs: Any) -> Any:
        sent.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
        return botocore.awsrequest.AWSResponse(request.url, 200, {"ETag": '"e"'}, _NoBody())

    tp.client().meta.events.register_first("before-send.s3", answer)
    try:
        for name, data in {"small.txt": b"tiny", "mid.bin": os.urandom(2 << 20)}.items():
            (tmp_path / name).write_bytes(data)
            tp.upload(tmp_path / name, name.encode())
            put = sent[-1]
            digest = hashlib.sha256(data)
            assert put["x-amz-checksum-sha256"] == base64.b64encode(digest.digest()).decode(), put
            assert put["x-amz-meta-fc-sha256"] == digest.hexdigest()
            assert "x-amz-trailer" not in put
    finally:
        tp.close()


class _NoBody:
    def __init__(self, body: bytes = b"") -> None:
        self.body = body

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return iter([self.body])


def test_s3_a_multipart_upload_to_aws_asks_the_store_to_check_each_part_of_our_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # To AWS each part went with a CRC32 trailer of what botocore read while sending it: nothing tied the parts
    # to our read (the fc-sha256 metadata).  Now the upload is a SHA256 one and each part's checksum header is
    # the SHA-256 of that part of our read, which AWS checks (BadDigest), and CompleteMultipartUpload lists them
    # (the object's checksum is their composite).  Built and signed for real, answered before leaving (no AWS).
    tp = _to_aws(tmp_path, monkeypatch, "&multipart_mb=5")
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def answer(request: Any, event_name: str, **kwargs: Any) -> Any:
        op = event_name.rsplit(".", 1)[1]
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        body = request.body if isinstance(request.body, bytes) else b""
        sent.append((op, headers, body))
        reply, xml = {"ETag": '"e"'}, b""
        if op == "CreateMultipartUpload":
            xml = b"<InitiateMultipartUploadResult><Key>pfx/big.bin</Key><UploadId>u1</UploadId>"
            xml += b"</InitiateMultipartUploadResult>"
        elif op == "UploadPart" and "x-amz-checksum-sha256" in headers:
            reply["x-amz-checksum-sha256"] = headers["x-amz-checksum-sha256"]  # what AWS checked and echoes
        elif op == "CompleteMultipartUpload":
            xml = b'<CompleteMultipartUploadResult><Key>pfx/big.bin</Key><ETag>"e-2"</ETag>'
            xml += b"</CompleteMultipartUploadResult>"
        return botocore.awsrequest.AWSResponse(request.url, 200, reply, _NoBody(xml))

    tp.client().meta.events.register_first("before-send.s3", answer)
    data = os.urandom(12 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    try:
        tp.upload(tmp_path / "big.bin", b"big.bin")
    finally:
        tp.close()
    ops = [op for op, _, _ in sent]
    assert ops == ["CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload"], ops
    assert sent[0][1]["x-amz-checksum-algorithm"] == "SHA256"
    assert sent[0][1]["x-amz-meta-fc-sha256"] == hashlib.sha256(data).hexdigest()
    want = [base64.b64encode(hashlib.sha256(part).digest()).decode() for part in (data[: 8 << 20], data[8 << 20 :])]
    parts = sorted((h for op, h, _ in sent if op == "UploadPart"), key=lambda h: h["content-length"], reverse=True)
    assert [h["x-amz-checksum-sha256"] for h in parts] == want
    assert all("x-amz-trailer" not in h for h in parts)
    complete = sent[-1][2].decode()
    assert all(f"<ChecksumSHA256>{w}</ChecksumSHA256>" in complete for w in want), complete


@pytest.mark.parametrize(
    ("spoil", "code"), [("content-md5", "BadDigest"), ("body", "XAmzContentSHA256Mismatch")], ids=["md5", "body"]
)
def test_s3_a_body_spoiled_on_its_way_is_retried_not_given_up(
    s3_backend: Backend, tmp_path: Path, spoil: str, code: str
) -> None:
    # A body that does not match its digest was damaged on its way (or the file rewritten while it was sent): the
    # store refuses it (400 BadDigest, XAmzContentSHA256Mismatch) and the next try sends it whole.  It was a
    # permanent failure: the file was never sent again.  Spoiled after botocore built and signed the request.
    tp = s3_backend.make()
    assert isinstance(tp, S3)
    src = tmp_path / "a.txt"
    src.write_bytes(b"the real content")

    def spoil_it(request: Any, **kwargs: Any) -> None:
        if spoil == "body":
            request.body = io.BytesIO(b"X" + request.body.getvalue()[1:])  # same length, one byte off
        else:
            request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(b"other").digest()).decode()

    tp.client().meta.events.register("before-send.s3.PutObject", spoil_it)
    with pytest.raises(TransientError, match=code):
        tp.upload(src, b"a.txt")
    assert not (s3_backend.files / "a.txt").exists()  # the store refused it: nothing wrong was published
    tp.client().meta.events.unregister("before-send.s3.PutObject", spoil_it)
    tp.upload(src, b"a.txt")
    assert (s3_backend.files / "a.txt").read_bytes() == b"the real content"


def test_s3_a_multipart_upload_of_a_file_rewritten_after_our_read_is_refused(
    s3_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path
) -> None:
    # A big file goes as parts that botocore reads while sending, after our read hashed it for the object's
    # fc-sha256: rewritten in between with size and mtime kept (the check after the send misses it), the other
    # version was published under our read's hash, a mix of both if it changed half-way.  Each part now goes
    # with the hash of that part of our read, which the store checks: refused, nothing published, sent again.
    tp = s3_backend.make(multipart_mb="5")
    assert isinstance(tp, S3)
    src = tmp_path / "big.bin"
    old, new = os.urandom(12 << 20), os.urandom(1 << 20)
    src.write_bytes(old)
    before = src.stat()

    def rewrite(**kwargs: Any) -> None:  # after our read, before the parts are read
        with open(src, "r+b") as f:
            f.seek(9 << 20)  # the second part
            f.write(new)
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))

    tp.client().meta.events.register("before-send.s3.CreateMultipartUpload", rewrite)
    with pytest.raises(TransientError, match="XAmzContentSHA256Mismatch"):
        tp.upload(src, b"big.bin")
    assert not (s3_backend.files / "big.bin").exists()
    assert not [p for p in s3_backend.files.rglob(".fc-multipart-*")]  # aborted
    tp.client().meta.events.unregister("before-send.s3.CreateMultipartUpload", rewrite)
    tp.upload(src, b"big.bin")
    now = src.read_bytes()
    assert (s3_backend.files / "big.bin").read_bytes() == now
    key = s3_backend.spec.rsplit("/", 1)[1] + "/big.bin"
    head = _s3_client(s3_server).head_object(Bucket=s3srv.BUCKET, Key=key)
    assert head["Metadata"]["fc-sha256"] == hashlib.sha256(now).hexdigest()
    assert head["ETag"].endswith('-2"')


def test_s3_upload_from_a_pipe_is_streamed(s3_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    # A pipe returns short reads; s3transfer took the first for "small file" and held it all in memory.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(9 << 20)
    tp = s3_backend.make()

    def feed() -> None:
        with open(fifo, "wb") as w:
            for i in range(0, len(data), 100_000):
                w.write(data[i : i + 100_000])

    writer = threading.Thread(target=feed)
    writer.start()
    tp.upload(fifo, b"piped.bin")
    writer.join()
    assert (s3_backend.files / "piped.bin").read_bytes() == data
    key = s3_backend.spec.rsplit("/", 1)[1] + "/piped.bin"
    etag = _s3_client(s3_server).head_object(Bucket=s3srv.BUCKET, Key=key)["ETag"]
    assert etag.endswith('-2"')  # two parts of 8 MiB and 1 MiB: streamed as a multipart upload


def test_s3_file_and_directory_of_the_same_name_coexist(s3_backend: Backend, tmp_path: Path) -> None:
    # The contract's "file in the way of a directory" has no counterpart in a flat key space.
    tp = s3_backend.make()
    tp.upload(tmp_path.joinpath("a").write_bytes(b"file") and tmp_path / "a", b"f")
    tp.upload(tmp_path / "a", b"f/x")
    assert tp.stat(b"f").size == 4  # type: ignore[union-attr]
    assert tp.stat(b"f/x").size == 4  # type: ignore[union-attr]


def test_s3_missing_bucket_is_permanent(s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    spec = f"s3://no-such-bucket/x?endpoint_url={s3_server.endpoint}&profile={s3srv.PROFILE}"
    src = tmp_path / "a"
    src.write_bytes(b"a")
    with for_destination(parse_destination(spec)) as tp, pytest.raises(PermanentError, match="no bucket") as info:
        tp.upload(src, b"a")
    assert not isinstance(info.value, AuthError)


def test_s3_anonymous_credentials_are_an_auth_error(s3_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"a")
    tp = s3_backend.make(profile=s3srv.WRONG_PROFILE)
    with pytest.raises(AuthError, match="InvalidAccessKeyId"):
        tp.upload(src, b"a")


def test_s3_urls_for_aws_and_compatible_stores() -> None:
    def url(spec: str) -> str:
        return for_destination(parse_destination(spec)).url(b"css/a b.css")

    assert (
        url("s3://assets/static?region=eu-west-1") == "https://assets.s3.eu-west-1.amazonaws.com/static/css/a%20b.css"
    )
    assert (
        url("s3://my.dotted.bucket/?region=eu-west-1")
        == "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/css/a%20b.css"
    )
    assert url("s3://assets/s?region=us-east-1&addressing_style=path").startswith(
        "https://s3.us-east-1.amazonaws.com/assets/s/"
    )
    minio = "s3://assets/s?endpoint_url=https://minio.example:9000"
    assert url(minio) == "https://minio.example:9000/assets/s/css/a%20b.css"
    assert url(minio + "&addressing_style=virtual") == "https://assets.minio.example:9000/s/css/a%20b.css"
    assert url("s3://assets/s?url=https://cdn.example/") == "https://cdn.example/css/a%20b.css"
    with pytest.raises(ConfigError, match="unknown setting"):
        url("s3://assets/?access_key=x")
    with pytest.raises(ConfigError):
        url("s3://assets/?addressing_style=sideways")


# -- cf -------------------------------------------------------------------------------------------


def _invalidated(server: s3srv.S3Server, dist: str) -> list[list[str]]:
    client = boto3.Session(profile_name=s3srv.PROFILE).client("cloudfront", endpoint_url=server.endpoint)
    items = client.list_invalidations(DistributionId=dist)["InvalidationList"].get("Items", [])
    batches = [client.get_invalidation(DistributionId=dist, Id=i["Id"])["Invalidation"] for i in items]
    return [b["InvalidationBatch"]["Paths"].get("Items", []) for b in batches]


def test_cf_urls_on_the_distribution_and_one_invalidation_per_batch(
    cf_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path
) -> None:
    dist = cf_backend.settings["distribution_id"]
    tp = _plain(cf_backend, invalidate_after="60")
    assert isinstance(tp, CloudFront)
    src = tmp_path / "a.css"
    src.write_bytes(b"a")
    sub = cf_backend.spec.rsplit("/", 1)[1]
    for name in (b"a.css", b"b.css", b"c d.css"):
        tp.upload(src, name)
    tp.delete(b"a.css")
    assert _invalidated(s3_server, dist) == []  # waiting for more
    domain = tp.url(b"a.css").split("/")[2]
    assert domain.endswith(".cloudfront.net") and tp.url(b"c d.css") == f"https://{domain}/{sub}/c%20d.css"
    tp.close()  # sends what waits
    assert _invalidated(s3_server, dist) == [[f"/{sub}/a.css", f"/{sub}/b.css", f"/{sub}/c%20d.css"]]


def test_cf_batches_hold_at_most_1000_paths(cf_backend: Backend, s3_server: s3srv.S3Server) -> None:
    dist = cf_backend.settings["distribution_id"]
    tp = _plain(cf_backend, invalidate_after="60")
    assert isinstance(tp, CloudFront) and tp.invalidations is not None
    for i in range(MAX_PATHS + 500):
        tp.invalidations.add(f"/p/{i}")  # the 1000th sends a full batch at once
    assert [len(b) for b in _invalidated(s3_server, dist)] == [MAX_PATHS]
    tp.flush()
    assert sorted(len(b) for b in _invalidated(s3_server, dist)) == [500, MAX_PATHS]


def test_cf_invalidations_also_go_after_a_while(cf_backend: Backend, s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    dist = cf_backend.settings["distribution_id"]
    tp = cf_backend.make(invalidate_after="0.2")
    src = tmp_path / "x"
    src.write_bytes(b"x")
    tp.upload(src, b"x")
    deadline = threading.Event()
    for _ in range(50):
        if _invalidated(s3_server, dist):
            break
        deadline.wait(0.1)
    assert len(_invalidated(s3_server, dist)) == 1


def test_create_distribution_reports_progress(s3_server: s3srv.S3Server) -> None:
    seen: list[tuple[str, float]] = []
    dist = create_distribution(
        s3srv.BUCKET,
        endpoint_url=s3_server.endpoint,
        profile=s3srv.PROFILE,
        poll=0.01,
        progress=lambda d, waited: seen.append((d.status, waited)),
    )
    assert dist.id and dist.domain.endswith(".cloudfront.net") and dist.status == "Deployed"
    assert dist.origin == f"{s3srv.BUCKET}.s3.us-east-1.amazonaws.com"
    assert seen[0] == ("InProgress", 0.0) and seen[-1][0] == "Deployed"


def test_cf_invalidation_to_a_dead_endpoint_is_transient_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers.process import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3srv.ACCESS_KEY)  # from the environment, as users would
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3srv.SECRET_KEY)

    spec = f"cf://b/x?distribution_id=EDEAD{free_port()}&domain=d.example&endpoint_url=http://127.0.0.1:{free_port()}"
    tp = for_destination(parse_destination(spec + "&invalidate_after=60&timeout=2"))
    assert isinstance(tp, CloudFront) and tp.invalidations is not None
    tp.invalidations.add("/x/a.css")
    with pytest.raises(TransientError, match="invalidate"):
        tp.flush()
    tp.close()  # logs, never raises (nor loops: the error path of an operation closes the transporter)
    assert list(tp.invalidations.pending) == ["/x/a.css"]  # kept for the next flush


def test_cf_needs_a_distribution() -> None:
    with pytest.raises(ConfigError, match="distribution_id"):
        for_destination(parse_destination("cf://bucket/static"))


# -- cloudfiles -----------------------------------------------------------------------------------


def test_cloudfiles_storage_url_is_public_and_typed(cloudfiles_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "logo.svg"
    src.write_bytes(b"<svg/>")
    tp = _plain(cloudfiles_backend, cache_control="max-age=60")
    tp.upload(src, b"img/logo.svg")
    url = tp.url(b"img/logo.svg")
    assert url.startswith(f"http://127.0.0.1:{urlport(cloudfiles_backend)}/v1/{swiftsrv.ACCOUNT}/{swiftsrv.CONTAINER}/")
    status, body, headers = _get(url)
    assert (status, body, headers["content-type"], headers["cache-control"]) == (
        200,
        b"<svg/>",
        "image/svg+xml",
        "max-age=60",
    )
    cdn = _plain(cloudfiles_backend, cdn_url="https://abc.ssl.cf1.rackcdn.com/")
    assert (
        cdn.url(b"img/a b.svg")
        == f"https://abc.ssl.cf1.rackcdn.com/{cloudfiles_backend.spec.rsplit('/', 1)[1]}/img/a%20b.svg"
    )


def urlport(backend: Backend) -> str:
    return backend.settings["auth_url"].split(":")[2].split("/")[0]


def test_cloudfiles_skip_unchanged(cloudfiles_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"one")
    tp = cloudfiles_backend.make(skip_unchanged="yes")
    tp.upload(src, b"a")
    tp.upload(src, b"a")
    assert tp.skipped  # type: ignore[attr-defined]
    src.write_bytes(b"two")
    tp.upload(src, b"a")
    assert not tp.skipped  # type: ignore[attr-defined]
    assert (cloudfiles_backend.files / "a").read_bytes() == b"two"


def test_cloudfiles_look_first_skips_what_is_there_once(cloudfiles_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"one")
    tp = cloudfiles_backend.make()
    assert tp.upload(src, b"a", look_first=True) == "uploaded"
    assert tp.upload(src, b"a", look_first=True) == "unchanged"
    assert tp.upload(src, b"a") == "uploaded"


def test_cloudfiles_large_file_goes_up_in_segments(cloudfiles_backend: Backend, tmp_path: Path) -> None:
    """Above segment_mb a file becomes a Static Large Object (what a file over Swift's 5 GiB limit needs): read
    back whole by a plain GET, replaced without leaving the old segments, recognised by skip_unchanged, and
    deleted with its segments."""
    src = tmp_path / "movie.mp4"
    first = os.urandom(3 * (1 << 20) + 12345)
    src.write_bytes(first)
    tp = _plain(cloudfiles_backend, segment_mb="1", skip_unchanged="yes")
    tp.upload(src, b"v/movie.mp4")
    url = tp.url(b"v/movie.mp4")
    status, body, headers = _get(url)
    assert (status, body) == (200, first)
    assert headers.get("x-static-large-object", "").lower() == "true"
    assert headers["content-type"] == "video/mp4"
    key = tp.key(b"v/movie.mp4")  # type: ignore[attr-defined]

    def segments() -> int:  # asked through Swift: SLO deletes its segments behind the proxy
        _, listing = tp.conn.get_container(f"{swiftsrv.CONTAINER}_segments", prefix=key + "/")  # type: ignore[attr-defined]
        return len(listing)

    assert segments() == 4  # 3 MiB + a bit, in 1 MiB segments
    tp.upload(src, b"v/movie.mp4")
    assert tp.skipped  # type: ignore[attr-defined]  # the manifest's stored MD5, not the SLO ETag
    second = os.urandom(2 * (1 << 20) + 1)
    src.write_bytes(second)
    tp.upload(src, b"v/movie.mp4")
    assert _get(url)[1] == second
    assert segments() == 3  # the old ones went
    tp.delete(b"v/movie.mp4")
    assert _get(url)[0] == 404
    assert segments() == 0
    small = tmp_path / "small.css"
    small.write_bytes(b"a{}")
    tp.upload(small, b"small.css")  # below segment_mb: one plain object
    assert "x-static-large-object" not in _get(tp.url(b"small.css"))[2]
    tp.delete(b"small.css")
    assert _get(tp.url(b"small.css"))[0] == 404


def test_cloudfiles_a_body_that_is_not_what_we_hashed_is_retried_not_given_up(
    cloudfiles_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Swift refuses (422) a body whose MD5 is not the ETag we send, the MD5 of our read: the file rewritten after
    # that read (size and mtime kept, so the check after the send misses it) or damaged on its way.  The next try
    # sends it whole; it was a permanent failure, never sent again.  The rewrite is done by a writer at the
    # moment between our read and the send (the server and swiftclient are real).
    tp = cloudfiles_backend.make()
    src = tmp_path / "a.txt"
    src.write_bytes(b"version one")
    before = src.stat()
    put = type(tp)._put

    def rewritten_first(self: Any, *args: Any, **kwargs: Any) -> None:
        with open(src, "r+b") as f:
            f.write(b"VERSION TWO")
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
        put(self, *args, **kwargs)

    monkeypatch.setattr(type(tp), "_put", rewritten_first)
    with pytest.raises(TransientError, match="422"):
        tp.upload(src, b"a.txt")
    assert not (cloudfiles_backend.files / "a.txt").exists()
    monkeypatch.setattr(type(tp), "_put", put)
    tp.upload(src, b"a.txt")
    assert (cloudfiles_backend.files / "a.txt").read_bytes() == b"VERSION TWO"


def test_cloudfiles_segment_mb_is_checked(cloudfiles_backend: Backend) -> None:
    with pytest.raises(ConfigError, match="segment_mb"):
        cloudfiles_backend.make(segment_mb="0")
    with pytest.raises(ConfigError, match="segment_mb"):
        cloudfiles_backend.make(segment_mb="lots")


def test_cloudfiles_missing_container_is_permanent(cloudfiles_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"a")
    tp = cloudfiles_backend.make(container="no-such-container")
    with pytest.raises(PermanentError, match="no container") as info:
        tp.upload(src, b"a")
    assert not isinstance(info.value, AuthError)


def test_the_issue_pipeline_with_endpoint_url_fetches_by_plain_get(s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    """fc-watch --scan-once examples/site | fc-transport --to s3://bucket/static --endpoint-url ..., as a user
    runs it (credentials from boto3's usual chain: here the AWS_* variables of the test server)."""
    import os
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import ROOT

    env = {**os.environ, **s3_server.env, "AWS_PROFILE": s3srv.PROFILE, "FC_STATE_DIR": str(tmp_path / "state")}
    bin_ = ROOT / "bin"
    cmd = (
        f"{sys.executable} {bin_ / 'fc-watch'} --scan-once --ignore-dirs CVS {ROOT / 'examples' / 'site'} | "
        f"{sys.executable} {bin_ / 'fc-transport'} --to s3://{s3srv.BUCKET}/static --endpoint-url {s3_server.endpoint}"
    )
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(events) == 10 and all(e["transported"] == "uploaded" for e in events)
    for e in events:
        with urllib.request.urlopen(e["url"], timeout=10) as resp:  # anonymous, no signature
            assert resp.read() == Path(e["path"]).read_bytes()
