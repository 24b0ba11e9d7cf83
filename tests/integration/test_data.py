"""Volumes and secrets through a real server and real agents (issue 24): a checkpoint kept
across jobs on the node holding it, a volume's size, files copied in and out with the CLI,
and a secret that reaches its job and appears nowhere else."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from sandrun.states import FailureReason, JobState
from tests.integration.cluster import SANDRUN, Cluster

SECRET = "s3cr3t-8c1f0e7a-never-shown"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("data")
    c = Cluster(root, db=str(root / "server.db"))
    c.make_tokens()
    c.start_server()
    c.start_agent("node-a", cpus=2)
    c.start_agent("node-b", cpus=2)
    yield c
    c.stop()


def _cli(cluster: Cluster, *args: str, stdin: str = "", who: str = "alice") -> str:
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens[who]}
    done = subprocess.run(
        [SANDRUN, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _node(cluster: Cluster, job_id: str) -> str:
    with cluster.client() as alice:
        node = alice.get(job_id).attempts[-1].node
    assert node is not None
    return node.partition("/")[0]


def test_a_checkpoint_written_to_a_volume_is_read_by_the_next_job(cluster: Cluster) -> None:
    with cluster.client() as alice:
        volume = alice.create_volume("ckpt", size="50MB")
        mount = [{"name": "ckpt", "mount_path": "/ckpt"}]
        first = alice.run("echo epoch-1 > /ckpt/model.txt", volumes=mount, upload_code=False)
        assert first.wait(60).status is JobState.COMPLETED, first.log_text()
        holder = alice.volume("ckpt").node
        assert holder in ("node-a", "node-b") and _node(cluster, first.id) == holder
        # Later jobs go where the bytes are, whichever node is free.
        readers = [
            alice.run(
                "cat /volumes/ckpt/model.txt",
                volumes=[{"name": "ckpt", "read_only": True}],
                upload_code=False,
            )
            for _ in range(4)
        ]
        for job in readers:
            assert job.wait(60).status is JobState.COMPLETED, job.log_text()
            assert job.log_text("stdout") == "epoch-1\n" and _node(cluster, job.id) == holder
        read_only = alice.run("echo x > /volumes/ckpt/y", volumes=[{"name": "ckpt",
                              "read_only": True}], upload_code=False)  # fmt: skip
        assert read_only.wait(60).status is JobState.FAILED
        assert "Read-only" in read_only.log_text("stderr")
    # The CLI: list, copy in, list what is there, copy out, through the server.
    listed = json.loads(_cli(cluster, "volume", "list", "--json"))
    assert [(v["name"], v["id"], v["node"]) for v in listed] == [("ckpt", volume.id, holder)]
    (cluster.root / "data.csv").write_text("a,b\n1,2\n")
    _cli(cluster, "volume", "put", "ckpt", str(cluster.root / "data.csv"), "inputs/data.csv")
    entries = json.loads(_cli(cluster, "volume", "ls", "ckpt", "--json"))
    assert {(e["kind"], e["path"]) for e in entries} >= {
        ("file", "model.txt"),
        ("dir", "inputs"),
        ("file", "inputs/data.csv"),
    }
    _cli(cluster, "volume", "get", "ckpt", "model.txt", str(cluster.root / "got"))
    assert (cluster.root / "got" / "model.txt").read_text() == "epoch-1\n"


def test_a_job_that_writes_past_a_volume_s_size_fails_volume_full(cluster: Cluster) -> None:
    with cluster.client() as alice:
        alice.create_volume("small", size="1MB")
        job = alice.run(
            "head -c 3000000 /dev/zero > /volumes/small/blob", volumes=["small"], upload_code=False
        )
        record = job.wait(60).record
        assert record.failure_reason is FailureReason.VOLUME_FULL, job.log_text()
        assert "'small'" in (record.message or "") and "1 MiB" in (record.message or "")
        # What it wrote stays (node-local bytes are not rolled back), as the message says.
        assert any(e.path == "blob" for e in _entries(alice, "small"))
        # A job that makes room may write again.
        fixed = alice.run("rm /volumes/small/blob && echo ok > /volumes/small/note",
                          volumes=["small"], upload_code=False)  # fmt: skip
        assert fixed.wait(60).status is JobState.COMPLETED, fixed.log_text()


def _entries(client: object, name: str) -> list:  # type: ignore[type-arg]
    from sandrun.client.volumes import list_volume

    return list_volume(client, name)  # type: ignore[arg-type]


def test_two_writers_of_a_volume_are_refused_unless_it_is_shared(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    with cluster.client() as alice:
        alice.create_volume("busy", size="10MB")
        first = alice.run("sleep 30", volumes=["busy"], upload_code=False)
        spec = {"shell": "true", "volumes": ["busy"]}
        second = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=headers)
        assert second.status_code == 409
        assert second.json()["code"] == "volume_conflict" and first.id in second.json()["message"]
        first.cancel()
        assert first.wait(60).status is JobState.CANCELLED
        again = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=headers)
        assert again.status_code == 201


def test_a_secret_reaches_its_job_and_appears_nowhere_else(cluster: Cluster) -> None:
    _cli(cluster, "secret", "set", "API_KEY", stdin=SECRET + "\n")
    listed = _cli(cluster, "secret", "list", "--json")
    assert "API_KEY" in listed and SECRET not in listed
    digest = hashlib.sha256(SECRET.encode()).hexdigest()  # the job checks it by its hash
    check = (
        f'[ "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = {digest} ] && '
        '[ "$(cat /run/secrets/api)" = "$API_KEY" ] && echo delivered'
    )
    with cluster.client() as alice:
        _cli(cluster, "secret", "set", "API_FILE", stdin=SECRET + "\n")
        job = alice.run(
            check,
            secrets=["API_KEY", {"name": "API_FILE", "file": "/run/secrets/api"}],
            upload_code=False,
        )
        assert job.wait(60).status is JobState.COMPLETED, job.log_text()
        assert job.log_text("stdout") == "delivered\n"
        answers = [
            httpx.get(f"{cluster.url}/v1/jobs/{job.id}{tail}", headers=_auth(cluster)).text
            for tail in ("", "/events", "/logs", "/attempts")
        ]
        answers.append(_cli(cluster, "status", job.id, "--json"))
    # Nowhere at rest or in any log: the database files, the servers' and agents' logs,
    # and whatever the agents left in their work directories.
    for text in answers:
        assert SECRET not in text
    for path in cluster.root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def _auth(cluster: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.tokens['alice']}"}


def test_a_volume_deleted_is_purged_from_its_node(cluster: Cluster) -> None:
    with cluster.client() as alice:
        alice.create_volume("gone", size="10MB")
        job = alice.run("echo bytes > /volumes/gone/f", volumes=["gone"], upload_code=False)
        assert job.wait(60).status is JobState.COMPLETED
        volume = alice.volume("gone")
        where = cluster.root / f"agent-{volume.node}" / "volumes" / volume.id
        assert (where / "f").read_text() == "bytes\n"
        alice.delete_volume("gone")
        (record,) = alice.jobs(name="purge-volume-gone").jobs
        assert alice.get(record.id).wait(60).status is JobState.COMPLETED
        assert not where.exists()
        assert "gone" not in [v.name for v in alice.list_volumes()]
