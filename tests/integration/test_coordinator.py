"""A pool coordinator's view of sandrun servers, played from the public API's description:
it allowlists workers by the Ed25519 key `/health` names (`worker_id`), sends jobs only to
those through `/submit`, reads `/status` and `/outputs` back, and checks each result's
countersignature against the key it allowlisted."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def deployments(tmp_path: Path, pg_url: str) -> Iterator[dict[str, Cluster]]:
    """A: two servers on one PostgreSQL database, one agent; B: a server and an agent;
    C: a server whose key nobody allowlisted."""
    made = {
        "A": Cluster(tmp_path / "a", db=pg_url),
        "B": Cluster(tmp_path / "b", db=str(tmp_path / "b.db")),
        "C": Cluster(tmp_path / "c", db=str(tmp_path / "c.db")),
    }
    try:
        for name, c in made.items():
            c.root.mkdir()
            c.make_tokens()
            c.start_server()
            if name != "C":
                c.start_agent(f"agent-{name}", cpus=2)
        yield made
    finally:
        for c in made.values():
            c.stop()


def _identity(c: Cluster) -> str:
    """What an operator hands the coordinator: `sandrun server --show-identity`."""
    shown = subprocess.run(
        [SANDRUN, "server", "--db", c.db, "--show-identity"], capture_output=True, text=True
    )
    return shown.stdout.strip()


def _healthy_workers(urls: list[str], allowlist: set[str]) -> dict[str, str]:
    """url -> worker_id, for the servers whose /health names an allowlisted key."""
    used = {}
    for url in urls:
        health = httpx.get(f"{url}/health").json()
        if health.get("status") == "healthy" and health.get("worker_id") in allowlist:
            used[url] = health["worker_id"]
    return used


def _countersigned(status: dict[str, Any], key: str) -> bool:
    meta = status["worker_metadata"]
    claim = {
        "v": 1,
        "countersign": status["job_id"],
        "attempt": meta["attempt"],
        "worker_id": meta["worker_id"],
        "signature": meta["signature"],
    }
    signed = json.dumps(claim, sort_keys=True, separators=(",", ":")).encode()
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))
        public.verify(base64.b64decode(meta["countersignature"]), signed)
    except Exception:
        return False
    return True


def test_a_coordinator_uses_the_servers_it_allowlisted(deployments: dict[str, Cluster]) -> None:
    a, b, c = deployments["A"], deployments["B"], deployments["C"]
    a_other = a.start_other_server()  # the same deployment behind a second URL
    allowlist = {_identity(a), _identity(b)}
    assert _identity(c) not in allowlist
    urls = [a.url, a_other, b.url, c.url]
    used = _healthy_workers(urls, allowlist)
    assert list(used) == [a.url, a_other, b.url]  # C's /health names another key
    assert used[a.url] == used[a_other] == _identity(a)  # one deployment, one worker

    code = b"print('hello from', open('which.txt').read())\nopen('out.txt','w').write('done')\n"
    for url, key in used.items():
        with httpx.Client(base_url=url, timeout=30) as worker:
            files = [("files", ("main.py", code)), ("files", ("which.txt", url.encode()))]
            job_id = worker.post("/submit", files=files).json()["job_id"]

            def ended(w: httpx.Client = worker, j: str = job_id) -> dict[str, Any] | None:
                status: dict[str, Any] = w.get(f"/status/{j}").json()
                return status if status["status"] in ("completed", "failed") else None

            status = wait_for(ended, timeout=60, what=f"the job on {url}")
            assert status["status"] == "completed"
            assert status["worker_metadata"]["server_id"] == key
            assert _countersigned(status, key)
            assert not _countersigned(status, _identity(c))  # another key does not verify
            listed = worker.get(f"/outputs/{job_id}").json()
            assert "out.txt" in [f["name"] for f in listed["files"]]
            assert worker.get(f"/download/{job_id}/out.txt").content == b"done"
            assert worker.get(f"/logs/{job_id}").json()["stdout"] == f"hello from {url}\n"
    with httpx.Client(base_url=c.url) as unused:
        admin = {"Authorization": f"Bearer {c.tokens['admin']}"}
        assert unused.get("/v1/jobs", headers=admin).json()["jobs"] == []
