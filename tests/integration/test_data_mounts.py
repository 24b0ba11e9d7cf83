"""Data mounts through a real server and agent (issue 24): a file and a tar archive from a
local HTTP server, a blob of the server, and an S3 prefix from an S3-compatible server
process (moto) with credentials from the job's secrets — each fetched once, verified and
shown read-only; and what the agent refuses to fetch or unpack."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from sandrun.models import JobRecord
from sandrun.states import FailureReason, JobState
from tests.integration.cluster import Cluster

CSV = b"id,label\n1,cat\n2,dog\n"


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
        for name, target in (links or {}).items():  # a symlink entry, as `zip -y` writes one
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, target)
    return out.getvalue()


class _Files(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012  # the paths asked for, across the module

    def do_GET(self) -> None:
        _Files.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("web")
    (root / "labels.csv").write_bytes(CSV)
    (root / "train.tar.gz").write_bytes(_tar({"train/a.txt": b"alpha\n", "train/b.txt": b"b\n"}))
    (root / "evil.tar.gz").write_bytes(_tar({"../../escaped.txt": b"out\n"}))
    zipped = _zip({"val/c.txt": b"gamma\n"}, links={"val/shadow": "/etc/shadow"})
    (root / "val.zip").write_bytes(zipped)
    (root / "evil.zip").write_bytes(_zip({"../../escaped.txt": b"out\n"}))
    handler = functools.partial(_Files, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("mounts")
    c = Cluster(root, db=str(root / "server.db"))
    c.make_tokens()
    c.start_server()
    c.start_agent("fetcher", cpus=2)
    yield c
    c.stop()


def _run(
    cluster: Cluster, shell: str, mounts: list[dict[str, object]], **more: object
) -> tuple[JobRecord, str]:
    """The job's end, and what it printed (stdout, then stderr)."""
    with cluster.client() as alice:
        job = alice.run(shell, data_mounts=mounts, upload_code=False, **more).wait(60)
        return job.record, job.log_text("stdout") + job.log_text("stderr")


def test_a_file_and_an_archive_from_http_are_fetched_once_and_read_only(
    cluster: Cluster, web: str
) -> None:
    mounts = [
        {"source": f"{web}/labels.csv", "target": "/data/labels.csv",
         "sha256": hashlib.sha256(CSV).hexdigest()},
        {"source": f"{web}/train.tar.gz", "target": "/train"},
        {"source": f"{web}/val.zip", "target": "/val"},
    ]  # fmt: skip
    shell = (
        "cat /data/labels.csv /train/train/a.txt /val/val/c.txt; "
        "touch /train/x 2>/dev/null || echo ro; test -e /val/val/shadow || echo no-link"
    )
    for _ in range(2):
        record, out = _run(cluster, shell, mounts)
        assert record.state is JobState.COMPLETED, out
        assert out == CSV.decode() + "alpha\ngamma\nro\nno-link\n"
    assert _Files.requests.count("/labels.csv") == 1  # the second job used the agent's copy
    assert _Files.requests.count("/train.tar.gz") == 1
    assert _Files.requests.count("/val.zip") == 1


def test_a_blob_of_the_server_is_mounted_by_digest(cluster: Cluster) -> None:
    with cluster.client() as alice:
        digest = alice.transport.put_blob(b"weights v1\n")
    _, out = _run(cluster, "cat /model", [{"source": f"artifact:{digest}", "target": "/model"}])
    assert out == "weights v1\n"


def test_an_s3_prefix_is_mounted_with_credentials_from_the_job_s_secrets(
    cluster: Cluster, s3: str
) -> None:
    store = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    store.create_bucket(Bucket="datasets")
    store.put_object(Bucket="datasets", Key="imagenet/val/0.txt", Body=b"zero\n")
    store.put_object(Bucket="datasets", Key="imagenet/val/sub/1.txt", Body=b"one\n")
    store.put_object(Bucket="datasets", Key="other/x.txt", Body=b"not this\n")
    with cluster.client() as alice:
        for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                            ("AWS_ENDPOINT_URL", s3)):  # fmt: skip
            alice.set_secret(name, value)
    secrets = [{"name": n, "env": f"X_{n}"} for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_ENDPOINT_URL")]  # fmt: skip
    mounts = [{"source": "s3://datasets/imagenet/val", "target": "/val"}]
    record, out = _run(cluster, "cd /val && find . -type f | sort && cat 0.txt sub/1.txt",
                       mounts, secrets=secrets)  # fmt: skip
    assert record.state is JobState.COMPLETED, out
    assert out == "./0.txt\n./sub/1.txt\nzero\none\n"


def test_what_the_agent_will_not_fetch_or_unpack_fails_data_error(
    cluster: Cluster, web: str
) -> None:
    for mounts in (
        [{"source": f"{web}/labels.csv", "target": "/d", "sha256": "0" * 64}],  # other bytes
        [{"source": f"{web}/missing.csv", "target": "/d"}],  # 404
        [{"source": f"{web}/evil.tar.gz", "target": "/d"}],  # an entry leaving its directory
        [{"source": f"{web}/evil.zip", "target": "/d"}],  # the same in a zip
    ):
        record, _ = _run(cluster, "true", mounts)
        assert record.failure_reason is FailureReason.DATA_ERROR, (mounts, record)
        assert mounts[0]["source"] in (record.message or "")
    assert not list(cluster.root.rglob("escaped.txt"))


def test_another_owner_s_blob_cannot_be_mounted(cluster: Cluster) -> None:
    with cluster.client("bob") as bob:
        digest = bob.transport.put_blob(b"bob's private model\n")
    with cluster.client() as alice, pytest.raises(Exception, match="nothing was uploaded"):
        alice.run("cat /m", data_mounts=[{"source": f"artifact:{digest}", "target": "/m"}],
                  upload_code=False)  # fmt: skip


def test_data_mount_sources_and_targets_are_checked(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client() as alice:
        for bad in (
            {"source": "file:///etc/shadow", "target": "/d"},
            {"source": "ftp://host/x", "target": "/d"},
            {"source": "https://example.com/x", "target": "/etc/passwd"},
            {"source": "https://example.com/x", "target": "/d/../../usr"},
        ):
            with pytest.raises(Exception, match="data_mounts") as refused:
                alice.run("true", data_mounts=[bad], upload_code=False)
            assert "data_mounts" in str(refused.value)
