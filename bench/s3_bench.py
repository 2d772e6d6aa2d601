#!/usr/bin/env python3
"""S3 benchmark: fc-transport's s3 transporter against `rclone copy` and `aws s3 sync`, 1 to 16 connections.

Not run by `make test`.  The store is the tests' S3 endpoint (moto in server mode, tests/servers/s3.py, with its
file system view turned off) on 127.0.0.1, restarted empty before every measurement.  One run measures, side by
side, for each connection count (default 1 2 4 8 16):

- fc-transport (events made beforehand by fc-watch --scan-once, so only the transport is timed, from process
  start to exit, state file and all), ``connections=N``;
- ``rclone copy --transfers N --checkers N`` (Debian's rclone, S3 backend, provider Other);
- ``aws s3 sync`` with ``max_concurrent_requests = N`` (the AWS CLI from PyPI).

All three upload with the canned ACL public-read (fc-transport's default, which a CDN origin needs), so the
store does the same work for each.

Sets: small files (default 10,000 of 4 KB) and large ones (default 20 of 20 MB); files/s, MB/s and the ratio
fc-transport / best peer at equal connections (above 1: fc-transport is faster).  Every run is checked: the
bucket must hold every file with its size.  All three share one limit: moto is a Python server, so its
requests per second cap what any client reaches; the ratios are what this compares.
Results: bench/results/s3-<date>.md and stdout.  A missing peer is an error, never a skip.

Quick run: .venv/bin/python bench/s3_bench.py --small 2000 --large 5 --large-mb 10 --connections 1 4 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BUCKET, bucket_listing, need, remove_state, s3srv  # noqa: E402
from benchlib import start_s3 as start_server  # noqa: E402
from transport_bench import add_set_arguments, compile_checkouts, make_sets, write_report  # noqa: E402

SECRET = "bench-secret"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_arguments(p)
    p.add_argument("--connections", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="default 1 2 4 8 16")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement, median reported (default 1)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-s3-bench")
    args = p.parse_args()
    rclone, aws = need("rclone"), need("aws")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    sets, events = make_sets(args, work)
    compile_checkouts(args)
    # Credentials through the environment, as each tool's normal chain reads them; nothing on command lines.
    # No AWS_CA_BUNDLE: the endpoint is plain http, and rclone refuses to start with a CA bundle set for it.
    env = {
        **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        "AWS_ACCESS_KEY_ID": s3srv.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(work / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")})
    versions = {
        "rclone": subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.splitlines()[0],
        "aws": subprocess.run([aws, "--version"], capture_output=True, text=True, env=env).stdout.strip(),
    }
    rows: list[tuple] = []
    labels = ["fc-transport", "rclone copy", "aws s3 sync"]
    if args.compare_with:
        labels.insert(1, f"fc-transport ({args.compare_with})")
    for name, (tree, count, size) in sets.items():
        if name not in args.sets.split(","):
            continue
        mb = count * size / 1e6
        for n in args.connections:
            (work / "aws-config").write_text(
                f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {n}\n  max_queue_size = 10000\n"
            )
            state = work / "transport-state.db"
            results: dict[str, float] = {}
            for label in labels:
                times = []
                for _ in range(args.repeat):
                    server = start_server(work)
                    endpoint = f"http://127.0.0.1:{server.port}"
                    prefix = f"{label.split()[0]}-{name}"
                    remove_state(state)
                    if label.startswith("fc-transport"):
                        spec = f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}&connections={n}"
                        checkout = args.compare_with if label != "fc-transport" else ROOT
                        argv = [PY, str(checkout / "bin" / "fc-transport"), "-q", "--to", spec, "--state", str(state)]
                        argv += ["--input", str(events[name]), "--output", os.devnull]
                    elif label == "rclone copy":
                        argv = [rclone, "--config", "/dev/null", "copy", "--transfers", str(n), "--checkers", str(n)]
                        argv += [str(tree), f":s3:{BUCKET}/{prefix}"]  # the S3 settings: RCLONE_S3_* below
                    else:
                        argv = [aws, "s3", "sync", "--quiet", "--acl", "public-read", "--endpoint-url", endpoint]
                        argv += [str(tree)]
                        argv += [f"s3://{BUCKET}/{prefix}"]
                    rclone_env = {
                        "RCLONE_S3_PROVIDER": "Other",
                        "RCLONE_S3_ENV_AUTH": "true",
                        "RCLONE_S3_ENDPOINT": endpoint,
                        "RCLONE_S3_NO_CHECK_BUCKET": "true",
                        "RCLONE_S3_ACL": "public-read",
                    }
                    started = time.perf_counter()
                    result = subprocess.run(argv, capture_output=True, env={**env, **rclone_env})
                    elapsed = time.perf_counter() - started
                    try:
                        if result.returncode != 0:
                            raise SystemExit(f"{label} failed ({result.returncode}):\n{result.stderr.decode()[-3000:]}")
                        want = sorted((str(p.relative_to(tree)), size) for p in tree.rglob("*.bin"))
                        if bucket_listing(endpoint, prefix) != want:
                            raise SystemExit(f"{label}: the bucket does not hold all {count} files")
                    finally:
                        server.stop()
                    times.append(elapsed)
                median = statistics.median(times)
                results[label] = median
                rows.append((name, n, label, count / median, mb / median, median, times))
                print(f"{name:5} {n:2} {label:14} {count / median:9.0f} files/s {mb / median:8.1f} MB/s", flush=True)
            best = min(results["rclone copy"], results["aws s3 sync"])
            rows.append((name, n, "ratio fc-transport / best peer", best / results["fc-transport"], 0, 0, []))
            if args.compare_with:
                other = best / results[f"fc-transport ({args.compare_with})"]
                rows.append((name, n, f"ratio fc-transport ({args.compare_with}) / best peer", other, 0, 0, []))
            print(f"{name:5} {n:2} fc-transport / best peer: {best / results['fc-transport']:.2f}", flush=True)
    report(args, rows, versions)


def report(args: argparse.Namespace, rows: list, versions: dict[str, str]) -> None:
    details = [
        f"Peers: {versions['rclone']}; {versions['aws']}  ",
        f"Store: moto {_moto_version()} in server mode on 127.0.0.1 (tests/servers/s3.py, no file view)  ",
        f"Sets: small = {args.small} x {args.small_kb} KB, large = {args.large} x {args.large_mb} MB; "
        f"median of {args.repeat}",
    ]
    write_report("s3", "S3 benchmark", details, "connections", rows)


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
