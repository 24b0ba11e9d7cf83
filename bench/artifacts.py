"""What an S3 artifact store costs jobs that write outputs, against a server whose blobs are
a local directory, in the same run: a server (SQLite) and one 2-CPU agent each, jobs that
write one output of `--size` MiB, then every output read back through the SDK.

    python bench/artifacts.py [--jobs 40] [--size 4]

The S3 store is moto's server in this process (pure Python, so it is the slow part: its
own PUT and GET rate for the same bytes, by boto3, is printed beside). With S3, outputs go
from the agent to the bucket and back to the client by presigned URLs; the server moves
none of their bytes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from server_throughput import _port, serve, stop

from sandrun.client import connect


def run_jobs(url: str, token: str, jobs: int, size_mb: int) -> tuple[float, float]:
    """(jobs/s from the first submit to the last end, MiB/s reading the outputs back)."""
    shell = f"head -c {size_mb << 20} /dev/urandom > out.bin"
    with connect(url, token=token) as client:
        client.run("true", upload_code=False).wait(60)  # warm up
        start = time.perf_counter()
        submitted = [client.run(shell, outputs=["out.bin"], upload_code=False) for _ in range(jobs)]
        done = client.wait(submitted, timeout=600)
        rate = jobs / (time.perf_counter() - start)
        failed = [j.id for j in done if j.record.state != "completed"]
        if failed:
            raise SystemExit(f"jobs failed: {failed[:3]}")
        start = time.perf_counter()
        total = sum(len(j.read_bytes("out.bin")) for j in done)
        read = total / (1 << 20) / (time.perf_counter() - start)
    return rate, read


def store_rate(endpoint: str, size_mb: int, count: int = 10) -> tuple[float, float]:
    """moto's own PUT and GET MiB/s for blobs of this size, by boto3."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"raw-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(size_mb << 20)
    start = time.perf_counter()
    for i in range(count):
        s3.put_object(Bucket=bucket, Key=str(i), Body=data)
    put = count * size_mb / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(count):
        s3.get_object(Bucket=bucket, Key=str(i))["Body"].read()
    return put, count * size_mb / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--size", type=int, default=4, help="MiB each job writes")
    args = parser.parse_args()
    # moto records every request in ./moto_recording unless told where (read at import).
    recording = Path(tempfile.mkdtemp()) / "moto_recording"
    os.environ.setdefault("MOTO_RECORDER_FILEPATH", str(recording))
    from moto.server import ThreadedMotoServer

    port = _port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    boto3.client("s3").create_bucket(Bucket="sandrun-bench")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in [
            ("local directory", ()),
            ("S3 (moto), presigned", ("--artifacts", "s3://sandrun-bench/blobs")),
        ]:
            url, token, procs = serve(Path(tmp) / name.split()[0], [2.0], server_args=extra)
            try:
                rows.append((name, *run_jobs(url, token, args.jobs, args.size)))
            finally:
                stop(procs)
    put, get = store_rate(endpoint, args.size)
    moto.stop()
    print(f"{args.jobs} jobs, each writing {args.size} MiB; server (SQLite) + one 2-CPU agent")
    print(f"{'blob store':<24}{'jobs/s':>8}{'read MiB/s':>12}{'x local':>9}")
    base = rows[0][1]
    for name, rate, read in rows:
        print(f"{name:<24}{rate:>8.1f}{read:>12.1f}{rate / base:>9.2f}")
    print(f"moto by boto3 alone: PUT {put:.1f} MiB/s, GET {get:.1f} MiB/s ({args.size} MiB blobs)")


if __name__ == "__main__":
    main()
