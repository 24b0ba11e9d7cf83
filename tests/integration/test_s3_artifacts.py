"""Two servers on one PostgreSQL sharing an S3 artifact store (moto's server, in this
process) with no shared disk; an agent that holds no S3 credentials moves blob bytes by
the URLs the servers presign, so none of those bytes pass through a server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from sandrun.client import connect
from sandrun.errors import ArtifactError, ValidationError
from sandrun.server import open_server_service
from sandrun.states import JobState
from tests.helpers import wait_for
from tests.integration.cluster import Cluster, free_port

pytestmark = pytest.mark.slow


@dataclass
class Shared:
    cluster: Cluster
    other: str  # the second server's URL
    bucket: str
    s3: Any  # a boto3 client of the store
    endpoint: str

    def keys(self) -> set[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="blobs/")
        return {item["Key"].removeprefix("blobs/") for item in listed.get("Contents", [])}

    def recorded(self) -> list[dict[str, Any]]:
        """The requests the store has taken since the recording started."""
        got = httpx.get(f"{self.endpoint}/moto-api/recorder/download-recording")
        return [json.loads(line) for line in got.text.splitlines() if line.strip()]


@pytest.fixture
def shared(tmp_path: Path, pg_url: str, s3: str) -> Iterator[Shared]:
    yield from _shared(tmp_path, pg_url, s3)


def _shared(tmp_path: Path, db: str, s3: str, **more: Any) -> Iterator[Shared]:
    bucket = f"sandrun-{uuid.uuid4().hex[:12]}"
    credentials = {
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    httpx.post(f"{s3}/moto-api/recorder/reset-recording")
    httpx.post(f"{s3}/moto-api/recorder/start-recording")
    c = Cluster(
        tmp_path,
        db=db,
        lease=10.0,
        artifacts=f"s3://{bucket}/blobs",
        server_env=credentials,
        **more,
    )
    try:
        c.make_tokens()
        c.start_server()
        other = c.start_other_server()
        c.start_agent("far", url=other)  # with no AWS_* in its environment
        yield Shared(c, other, bucket, client, s3)
    finally:
        c.stop()
        with contextlib.suppress(httpx.HTTPError):  # a test may have stopped the store
            httpx.post(f"{s3}/moto-api/recorder/stop-recording")


def _agent(request: dict[str, Any]) -> str:
    """A recorded request's User-Agent."""
    return str(request["headers"].get("User-Agent", ""))


def _code(root: Path) -> Path:
    code = root / "code"
    code.mkdir()
    (code / "double.sh").write_text("mkdir -p out && cat data.bin data.bin > out/twice.bin\n")
    return code


def test_blobs_live_in_the_bucket_and_move_by_presigned_urls(shared: Shared) -> None:
    c = shared.cluster
    data = os.urandom(200 << 10)
    with c.client() as alice:  # through the first server; the agent serves the second
        code = alice.upload_directory(_code(c.root))
        data_digest = alice.transport.put_blob(data)
        job = alice.run(
            "sh double.sh && echo small > out/small.txt",
            code=code,
            inputs={"data.bin": data_digest},
            outputs=["out/*"],
        ).wait(60)
        assert job.record.state == JobState.COMPLETED, job.record.message
        assert job.read_bytes("out/twice.bin") == data + data
        assert job.read_bytes("out/small.txt") == b"small\n"
        outputs = {out.path: out.digest for out in job.outputs}
        token = c.tokens["alice"]

    # Every blob is an object in the bucket, with its checksum; no server kept a directory.
    assert {code, data_digest, *outputs.values()} <= shared.keys()
    for digest in outputs.values():
        head = shared.s3.head_object(
            Bucket=shared.bucket, Key=f"blobs/{digest}", ChecksumMode="ENABLED"
        )
        assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(digest)).decode()
    assert not (c.root / "artifacts").exists()

    # A download is a redirect to a presigned URL of the store, from either server.
    for server in (c.url, shared.other):
        got = httpx.get(
            f"{server}/v1/jobs/{job.id}/outputs/out/twice.bin",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert got.status_code == 307
        assert got.headers["location"].startswith(f"{shared.endpoint}/{shared.bucket}/blobs/")
        assert "X-Amz-Signature=" in got.headers["location"]
        assert httpx.get(got.headers["location"]).content == data + data

    # The public API's downloads: one file by redirect (named as the job named it), all
    # of them as a tarball the server builds from the bucket.
    auth = {"Authorization": f"Bearer {token}"}
    one = httpx.get(f"{c.url}/download/{job.id}/out/small.txt", headers=auth)
    assert one.status_code == 307
    fetched = httpx.get(one.headers["location"])
    assert fetched.content == b"small\n"
    assert 'filename="small.txt"' in fetched.headers["content-disposition"]
    tarball = httpx.get(f"{shared.other}/download/{job.id}", headers=auth)
    with tarfile.open(fileobj=io.BytesIO(tarball.content)) as tar:
        assert tar.extractfile("out/twice.bin").read() == data + data  # type: ignore[union-attr]

    # The agent fetched the code and input, and put the outputs, by presigned URL itself
    # (httpx: the servers' client is boto3); the bucket never saw any sandrun token.
    requests = shared.recorded()
    by_agent = {
        (r["method"], r["url"].split("?")[0].rsplit("/", 1)[-1])
        for r in requests
        if "python-httpx" in _agent(r) and "X-Amz-Signature=" in r["url"]
    }
    assert {("GET", code), ("GET", data_digest)} <= by_agent
    assert {("PUT", digest) for digest in outputs.values()} <= by_agent
    server_puts = {
        r["url"].split("?")[0].rsplit("/", 1)[-1]
        for r in requests
        if r["method"] == "PUT" and "Boto3" in _agent(r)
    }
    assert not server_puts & set(outputs.values()), "an output passed through a server"
    seen = json.dumps([r["headers"] for r in requests])
    assert not any(secret in seen for secret in c.tokens.values())  # no user's, no agent's


def test_gc_removes_unreferenced_blobs_from_the_bucket(shared: Shared) -> None:
    c = shared.cluster
    with c.client() as alice:
        kept = alice.run("echo kept > k.txt", outputs=["k.txt"], upload_code=False).wait(60)
        assert kept.record.state == JobState.COMPLETED, kept.record.message
        (kept_digest,) = [out.digest for out in kept.outputs]
        orphan = alice.transport.put_blob(b"nobody refers to this")
    assert {kept_digest, orphan} <= shared.keys()
    with connect(shared.other, token=c.tokens["admin"]) as admin:  # the other server
        # S3 keeps times to the second: collect until the orphan is a second old.
        wait_for(
            lambda: admin.collect_garbage(older_than=0.5).artifacts_removed > 0,
            timeout=15,
            what="gc to remove the orphan blob",
        )
    assert orphan not in shared.keys()
    assert kept_digest in shared.keys()
    with c.client() as alice:
        assert alice.get(kept.id).read_bytes("k.txt") == b"kept\n"


def test_an_agent_can_put_only_what_the_url_names(shared: Shared) -> None:
    """The URL signs the checksum and length in; an object that does not carry the
    checksum its name says is no blob, so an end naming it is refused."""
    c = shared.cluster
    agent = {"Authorization": f"Bearer {c.tokens['agents']}"}
    honest = b"the output the agent claims"
    digest = hashlib.sha256(honest).hexdigest()
    with httpx.Client(base_url=c.url, headers=agent) as http:
        (target,) = http.post(
            "/v1/agent/uploads", json={"blobs": [{"digest": digest, "size": len(honest)}]}
        ).json()["uploads"]
        signed = target["url"].split("X-Amz-SignedHeaders=")[1].split("&")[0]
        assert {"content-length", "x-amz-checksum-sha256"} <= set(signed.split("%3B"))
        other = b"other bytes of the same size!!"[: len(honest)]
        their_checksum = base64.b64encode(hashlib.sha256(other).digest()).decode()
        # Without the signed checksum, or with the checksum of the bytes sent instead.
        for headers in ({}, {**target["headers"], "x-amz-checksum-sha256": their_checksum}):
            httpx.put(target["url"], content=other, headers=headers)
            assert http.get(f"/v1/agent/artifacts/{digest}").status_code == 404
        httpx.put(target["url"], content=honest, headers=target["headers"])
        assert http.get(f"/v1/agent/artifacts/{digest}").status_code == 307
        # Over one PUT's 5 GiB: refused, by name.
        big = http.post(
            "/v1/agent/uploads", json={"blobs": [{"digest": "a" * 64, "size": 6 << 30}]}
        )
        assert (big.status_code, big.json()["code"]) == (413, "upload_too_large")
        # A user cannot ask for upload URLs; a blob the store has gets none.
        refused = httpx.post(
            f"{c.url}/v1/agent/uploads",
            json={"blobs": [{"digest": digest, "size": 1}]},
            headers={"Authorization": f"Bearer {c.tokens['alice']}"},
        )
        assert refused.status_code == 403
        with c.client() as alice:
            present = alice.transport.put_blob(b"alice's blob")
        (again,) = http.post(
            "/v1/agent/uploads", json={"blobs": [{"digest": present, "size": 12}]}
        ).json()["uploads"]
        assert again["url"] is None


def test_a_function_call_returns_through_the_bucket(shared: Shared) -> None:
    source = shared.cluster.root / "train.py"
    source.write_text("def train(epochs):\n    return {'epochs': epochs, 'loss': 0.5}\n")
    with shared.cluster.client() as alice:
        assert alice.invoke(source, "train", args=[3]) == {"epochs": 3, "loss": 0.5}


def test_a_store_that_cannot_be_opened_is_refused_by_name(tmp_path: Path, s3: str) -> None:
    with pytest.raises(ValidationError, match="gs:// is not supported") as bad:
        open_server_service(str(tmp_path / "db"), artifacts="gs://bucket/x")
    assert bad.value.field == "artifacts"
    with pytest.MonkeyPatch.context() as env:
        for name, value in [("AWS_ENDPOINT_URL", s3), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")]:  # fmt: skip
            env.setenv(name, value)
        with pytest.raises(ArtifactError, match="cannot open the artifact store s3://absent"):
            open_server_service(str(tmp_path / "db"), artifacts="s3://absent/blobs")


def test_a_result_survives_an_outage_of_the_store(tmp_path: Path, s3: str) -> None:
    """The store goes away as a job ends: the agent's upload and the server's check fail
    and are tried again; once the store is back the job completes with its output."""
    from moto.server import ThreadedMotoServer  # after the s3 fixture set where it records

    port = free_port()
    store = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    store.start()
    endpoint = f"http://127.0.0.1:{port}"
    shared = _shared(tmp_path, str(tmp_path / "server.db"), endpoint, host_paths=True)
    s = next(shared)
    try:
        marks = tmp_path / "marks"
        marks.mkdir()
        marks.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
        # Through the agent's own server: on SQLite, only it wakes the agent's poll at once.
        with connect(s.other, token=s.cluster.tokens["alice"]) as alice:
            job = alice.run(
                "while [ ! -e go ]; do sleep 0.05; done; echo result > out.txt",
                working_dir=str(marks),
                outputs=["out.txt"],
            )
            wait_for(lambda: job.refresh().status is JobState.RUNNING, timeout=30, what="the job")
            store.stop()
            (marks / "go").touch()
            # The agent's call for upload URLs meets the server's 503 (the server cannot
            # reach the store), or its PUT the store's closed port; each is tried again.
            wait_for(
                lambda: re.search(
                    r"artifact_store_unavailable.*trying again|to the artifact store failed",
                    s.cluster.log("agent-far"),
                ),
                timeout=60,
                what="the agent to meet the outage",
            )
            store = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            store.start()
            ended = job.wait(120)
            assert ended.record.state == JobState.COMPLETED, ended.record.message
            assert [a.state for a in ended.attempts] == ["completed"]
            assert ended.read_bytes("out.txt") == b"result\n"
    finally:
        shared.close()
        store.stop()
