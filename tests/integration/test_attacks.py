"""Attacks on the surfaces around the sandbox (issue 17): a hostile user's spec, a rogue
agent speaking the agent API with its own key, another tenant naming blobs by digest,
forged forwarding headers, stolen tokens.

Each test performs the attack for real against a server and agents on loopback and checks
what it must not get.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sandrun.client import Client
from sandrun.protocol import KeyProof
from sandrun.roles import Role
from sandrun.server import open_server_service
from sandrun.signing import Identity, result_claim
from sandrun.states import FailureReason, JobState
from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster
from tests.integration.rogue import FREE, Rogue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server with auth on (SQLite) and one honest agent. The rogue agents here do not
    heartbeat between their steps, and no test needs a lost agent noticed: a long lease
    keeps a loaded machine's reaper from requeueing a rogue's job mid-test."""
    root = tmp_path_factory.mktemp("attacks")
    c = Cluster(root, db=str(root / "server.db"), lease=60.0)
    c.make_tokens()
    c.start_server()
    c.start_agent("honest", cpus=8)
    yield c
    c.stop()


def _headers(cluster: Cluster, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.tokens[who]}"}


@pytest.fixture
def rogue(cluster: Cluster, tmp_path: Path) -> Rogue:
    r = Rogue(cluster, f"rogue-{tmp_path.name[-12:]}", Identity.load_or_create(tmp_path / "k"))
    assert r.register().status_code == 200
    return r


def _rogue_job(client: Client) -> str:
    """A job only the rogue agent's pool can take."""
    return client.submit({"shell": "true", "requires": {"pool": "rogue"}}).id


# --- 1. a spec naming a host path -----------------------------------------------------------


def test_a_server_refuses_a_host_working_dir_and_records_nothing(cluster: Cluster) -> None:
    spec = {"command": ["cat", "shadow"], "working_dir": "/etc", "outputs": ["shadow"]}
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=_headers(cluster, "bob"))
    assert answer.status_code == 403
    assert answer.json()["code"] == "host_path_refused" and answer.json()["field"] == "working_dir"
    with cluster.client("bob") as bob:
        assert bob.jobs().jobs == []


def test_a_remote_agent_refuses_a_host_working_dir_an_older_server_hands_it(
    cluster: Cluster,
) -> None:
    # Recorded behind the server's back (as an older server would have accepted it).
    service = open_server_service(cluster.db, host_paths=True)
    job = service.submit(
        {"command": ["cat", "shadow"], "working_dir": "/etc", "outputs": ["shadow"]}, "bob"
    )
    service.close()
    with cluster.client("bob") as bob:
        ended = bob.get(job.id).wait(60)
        assert ended.record.state is JobState.FAILED
        assert ended.record.failure_reason is FailureReason.SPAWN_ERROR
        assert "never in a directory of its host" in (ended.record.message or "")
        assert ended.outputs == []


def test_outputs_never_follow_a_link_out_of_the_attempt(cluster: Cluster, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host-only")
    secret.chmod(0o644)  # readable by anyone on the host: only the link's target matters
    with cluster.client("bob") as bob:
        job = bob.run(
            f"ln -s {secret} leak; ln -s {tmp_path} dir; mkdir real; ln -s {secret} real/x; "
            "mkfifo pipe; echo mine > real/ok",
            outputs=["leak", "dir", "dir/*", "real", "pipe", "*"],
            upload_code=False,
        ).wait(60)
        assert job.record.state is JobState.COMPLETED, job.record.message
        paths = sorted(o.path for o in job.outputs)
        assert paths == ["real/ok"]
        assert job.read_text("real/ok") == "mine\n"


# --- 2 and 3. outputs an agent names --------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "../../x", "a/../../b", "./a", "a//b", "a/."])
def test_the_server_refuses_an_output_path_outside_the_workdir(
    cluster: Cluster, rogue: Rogue, path: str
) -> None:
    with cluster.client("alice") as alice:
        job_id = _rogue_job(alice)
        claim = rogue.claim()
        digest = rogue.put(b"planted")
        answer = rogue.complete(claim, [{"attempt": 1, "path": path, "digest": digest, "size": 7}])
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == "result.outputs.0.path"
        assert alice.get(job_id).record.state is JobState.RUNNING  # nothing accepted
        good = {"attempt": 1, "path": "ok.txt", "digest": digest, "size": 7}
        assert rogue.complete(claim, [good]).status_code == 200
        assert [o.path for o in alice.get(job_id).outputs] == ["ok.txt"]


def test_an_output_listed_twice_is_refused(cluster: Cluster, rogue: Rogue) -> None:
    with cluster.client("alice") as alice:
        job_id = _rogue_job(alice)
        claim = rogue.claim()
        signed, unsigned = rogue.put(b"signed"), rogue.put(b"unsigned")
        outputs = [
            {"attempt": 1, "path": "out.txt", "digest": unsigned, "size": 8},
            {"attempt": 1, "path": "out.txt", "digest": signed, "size": 6},
        ]
        answer = rogue.complete(claim, outputs)
        assert answer.status_code == 400 and "listed twice" in answer.json()["message"]
        assert alice.get(job_id).record.state is JobState.RUNNING


def test_a_rogue_report_is_refused_item_by_item_and_ends_nobody_elses_attempt(
    cluster: Cluster, rogue: Rogue
) -> None:
    """The batched report: each forged or bad item is refused alone, nothing of it lands,
    and a report larger than one transaction should take is refused whole (422)."""
    with cluster.client("alice") as alice:
        job_id = _rogue_job(alice)
        claim = rogue.claim()
        digest = rogue.put(b"planted")
        ref = claim.ref.model_dump()
        forged = {**ref, "token": "forged"}
        outside = {"attempt": 1, "path": "../../etc/cron.d/x", "digest": digest, "size": 7}
        answer = rogue.post(
            "report",
            {
                "node": rogue.node,
                "starts": [{"ref": forged, "pid": 1}],
                "ends": [
                    {"ref": forged, "result": {"exit_code": 0}},
                    {"ref": ref, "result": {"exit_code": 0, "outputs": [outside]}},
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        assert [o["error"]["code"] for o in reply["starts"]] == ["stale_attempt"]
        codes = [(o["error"] or {}).get("code") for o in reply["ends"]]
        assert codes == ["bad_signature", "invalid_input"]  # unsigned; a path outside
        assert reply["ends"][1]["error"]["field"] == "result.outputs.0.path"
        assert alice.get(job_id).record.state is JobState.RUNNING  # nothing of it landed
        too_many = rogue.post(
            "report", {"node": rogue.node, "ends": [{"ref": forged, "result": {}}] * 257}
        )
        assert too_many.status_code == 422 and too_many.json()["field"] == "ends"
        good = {"attempt": 1, "path": "ok.txt", "digest": digest, "size": 7}
        assert rogue.complete(claim, [good]).status_code == 200  # the attempt is still its own
        assert alice.get(job_id).record.state is JobState.COMPLETED


def test_an_inline_output_must_be_what_its_digest_names(cluster: Cluster, rogue: Rogue) -> None:
    """Small outputs ride with their end (`blobs`): one whose bytes are not its digest's is
    refused with that end alone, and an honest one completes the job without an upload."""
    with cluster.client("alice") as alice:
        job_id = _rogue_job(alice)
        claim = rogue.claim()
        honest = b"the real result"
        digest = hashlib.sha256(honest).hexdigest()
        output = {"attempt": 1, "path": "out.txt", "digest": digest, "size": len(honest)}
        signed = result_claim(claim.job.id, claim.attempt, claim.job.spec, 0, {"out.txt": digest})
        result = {"exit_code": 0, "outputs": [output], "signature": rogue.identity.sign(signed)}
        end = {"ref": claim.ref.model_dump(), "result": result}

        def report(data: bytes) -> dict[str, Any]:
            blob = {"digest": digest, "data": base64.b64encode(data).decode()}
            answer = rogue.post("report", {"node": rogue.node, "ends": [end | {"blobs": [blob]}]})
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["ends"][0])

        lied = report(b"something else")
        assert (lied["error"]["code"], lied["error"]["field"]) == ("invalid_input", "blobs.0")
        assert alice.get(job_id).record.state is JobState.RUNNING
        assert report(honest)["error"] is None
        job = alice.get(job_id)
        assert job.record.state is JobState.COMPLETED
        assert job.read_bytes("out.txt") == honest
        too_big = {"digest": digest, "data": base64.b64encode(b"x" * (65 << 10)).decode()}
        answer = rogue.post("report", {"node": rogue.node, "ends": [end | {"blobs": [too_big]}]})
        assert answer.status_code == 422 and "blobs" in answer.json()["field"]


def test_an_agent_token_cannot_act_as_a_node_another_operator_registered(
    cluster: Cluster,
) -> None:
    """Claiming, beating, handing back or reporting as a node: only for the operator (the
    agent token's name) who registered it, or an admin."""
    service = open_server_service(cluster.db)
    other = service.create_token("other-operator", Role.AGENT)
    service.close()

    def call(token: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{cluster.url}/v1/agent/{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    mine = call(cluster.tokens["agents"], "register", {"name": "mine", "capacity": FREE})
    node = mine.json()["node_id"]
    ref = {"job_id": "j", "attempt": 1, "token": "t"}
    as_node = {
        "heartbeat": {"node": node, "leases": []},
        "hand-back": {"node": node, "attempts": [], "reason": "stopping"},
        "claim": {"node": node, "free": FREE, "wait": 0},
        "report": {"node": node},
        "complete-and-claim": {"node": node, "free": FREE, "ref": ref, "result": {}},
    }
    for path, body in as_node.items():
        refused = call(other, path, body)
        assert refused.status_code == 403, (path, refused.text)
        assert (refused.json()["code"], refused.json()["field"]) == ("forbidden", "node")
    assert call(cluster.tokens["agents"], "heartbeat", as_node["heartbeat"]).status_code == 200
    assert call(cluster.tokens["admin"], "heartbeat", as_node["heartbeat"]).status_code == 200
    # Its own node is its own: the other operator registers and beats for that one.
    theirs = call(other, "register", {"name": "theirs", "capacity": FREE}).json()["node_id"]
    assert call(other, "heartbeat", {"node": theirs, "leases": []}).status_code == 200


# --- 4. a worker identity claimed twice -----------------------------------------------------


def test_a_stolen_public_key_cannot_register_as_another_node(
    cluster: Cluster, rogue: Rogue, tmp_path: Path
) -> None:
    honest = next(n for n in cluster.nodes() if n.name == "honest")
    assert honest.public_key and honest.key_first_seen is not None
    thief = Rogue(cluster, "thief", Identity.load_or_create(tmp_path / "thief"))
    # With the honest key and the thief's own proof: the proof does not verify.
    forged = thief.register(public_key=honest.public_key)
    assert forged.status_code == 401 and forged.json()["field"] == "key_proof.signature"
    # Without a proof at all.
    answer = thief.post(
        "register", {"name": "thief", "capacity": FREE, "public_key": honest.public_key}
    )
    assert answer.status_code == 401 and answer.json()["field"] == "key_proof"
    # With the honest agent's private key (stolen) but another name: the key is bound.
    stolen = Identity.load_or_create(cluster.root / "agent-honest" / "identity.key")
    thief.identity = stolen
    bound = thief.register()
    assert bound.status_code == 409 and bound.json()["code"] == "key_in_use"
    # An old proof is refused too (no replays of a registration seen on the wire).
    old = time.time() - 3600
    stale = rogue.register(proof=KeyProof(at=old, signature=rogue.identity.prove(rogue.name, old)))
    assert stale.status_code == 401 and stale.json()["field"] == "key_proof.at"
    # The same node restarting with its own key and a fresh proof is welcome.
    assert rogue.register().status_code == 200
    names = [n.name for n in cluster.nodes() if n.public_key == honest.public_key]
    assert set(names) == {"honest"}


# --- 5. blobs across tenants ----------------------------------------------------------------


def test_a_blob_is_visible_only_to_its_owners(cluster: Cluster) -> None:
    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        bobs = len(bob.jobs().jobs)
        job = alice.run("echo alice-secret > out.txt", outputs=["out.txt"], upload_code=False).wait(
            60
        )
        [out] = job.outputs
        uploaded = alice.transport.put_blob(b"alice's upload")  # type: ignore[attr-defined]
        for digest in (out.digest, uploaded):
            head = f"{cluster.url}/v1/artifacts/{digest}"
            assert httpx.head(head, headers=_headers(cluster, "alice")).status_code == 200
            assert httpx.head(head, headers=_headers(cluster, "admin")).status_code == 200
            assert httpx.head(head, headers=_headers(cluster, "bob")).status_code == 404
            spec = {"command": ["cat", "x"], "inputs": {"x": digest}, "outputs": ["x"]}
            stolen = httpx.post(
                f"{cluster.url}/v1/jobs", json=spec, headers=_headers(cluster, "bob")
            )
            missing = {**spec, "inputs": {"x": "f" * 64}}
            absent = httpx.post(
                f"{cluster.url}/v1/jobs", json=missing, headers=_headers(cluster, "bob")
            )
            assert stolen.status_code == absent.status_code == 404
            assert stolen.json()["code"] == absent.json()["code"] == "artifact_not_found"
        assert len(bob.jobs().jobs) == bobs  # nothing recorded
        # Nor its countersignature: another tenant's job is absent there too.
        counter = f"{cluster.url}/v1/jobs/{job.id}/attempts/1/countersignature"
        assert httpx.get(counter, headers=_headers(cluster, "alice")).status_code == 200
        assert httpx.get(counter, headers=_headers(cluster, "bob")).status_code == 404
        # bob uploading the same bytes himself is fine: then he has them anyway.
        assert bob.transport.put_blob(b"alice's upload") == uploaded  # type: ignore[attr-defined]
        spec = {"command": ["cat", "x"], "inputs": {"x": uploaded}}
        assert bob.submit(spec).wait(60).log_text() == "alice's upload"


# --- 8. archive bombs ---------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _zip_bomb(size: int) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("main.py", "w", force_zip64=True) as member:
            zeros = _Zeros(size)
            while chunk := zeros.read(1 << 20):
                member.write(chunk)
    return raw.getvalue()


def _tar_bomb(size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        entry = tarfile.TarInfo("main.py")
        entry.size = size
        tar.addfile(entry, _Zeros(size))
    return raw.getvalue()


def _many_files(count: int) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        for i in range(count):
            archive.writestr(f"f{i}.txt", b"")
    return raw.getvalue()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("bomb.zip", lambda: _zip_bomb(400 << 20), "unpacks to over 100 MiB"),
        ("bomb.tar.gz", lambda: _tar_bomb(400 << 20), "unpacks to over 100 MiB"),
        ("many.zip", lambda: _many_files(10_001), "holds over 10000 files"),
    ],
)
def test_an_archive_bomb_is_refused_with_bounded_memory(
    cluster: Cluster, name: str, make: Any, says: str
) -> None:
    archive = make()
    assert len(archive) < 3 << 20  # megabytes that claim hundreds
    assert cluster.server is not None
    # Reset the server's peak RSS, so this request's cost is what is measured.
    Path(f"/proc/{cluster.server.pid}/clear_refs").write_text("5")
    before = _peak_rss_mb(cluster.server.pid)
    answer = httpx.post(f"{cluster.url}/submit", files={"files": (name, archive)}, timeout=60)
    assert answer.status_code == 413, answer.text
    assert says in answer.json()["error"]
    assert _peak_rss_mb(cluster.server.pid) - before < 48  # was gigabytes
    assert cluster.server.poll() is None


# --- 9. limits with no ceiling --------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"shell": "true", "limits": {"log_size": "100GB"}}, "limits.log_size"),
        ({"shell": "true", "limits": {"output_size": "1TB"}}, "limits.output_size"),
        ({"shell": "true", "limits": {"processes": 1_000_000}}, "limits.processes"),
        ({"script": "#" * (5 << 20)}, "spec"),
    ],
)
def test_a_spec_over_the_servers_maxima_is_refused(
    cluster: Cluster, spec: dict[str, Any], field: str
) -> None:
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=_headers(cluster, "bob"))
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "over_maximum" and answer.json()["field"] == field
    assert "over this server's maximum" in answer.json()["message"]


def test_an_environment_past_what_one_exec_holds_is_refused_before_the_maxima(
    cluster: Cluster,
) -> None:
    """2 MiB of env is over the default env_size maximum too; the kernel's own limit (128
    KiB a variable) refuses it first, naming the variable."""
    spec = {"shell": "true", "env": {"BIG": "x" * (2 << 20)}}
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=_headers(cluster, "bob"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_spec" and answer.json()["field"] == "env.BIG"


def test_huge_logs_are_served_without_holding_them_in_memory(cluster: Cluster) -> None:
    size = 96 << 20
    with cluster.client("alice") as alice:
        job = alice.run(
            f"head -c {size} /dev/zero | tr '\\0' a; echo; echo tail >&2",
            limits={"log_size": "128MB"},
            upload_code=False,
        ).wait(120)
        assert job.record.state is JobState.COMPLETED
    assert cluster.server is not None
    Path(f"/proc/{cluster.server.pid}/clear_refs").write_text("5")
    before = _peak_rss_mb(cluster.server.pid)
    with httpx.stream(
        "GET", f"{cluster.url}/logs/{job.id}", headers=_headers(cluster, "alice"), timeout=120
    ) as answer:
        assert answer.status_code == 200
        head, length = b"", 0
        for block in answer.iter_bytes():
            head = head or block[:12]
            length += len(block)
    assert head == b'{"stdout": "'
    assert length > size
    assert _peak_rss_mb(cluster.server.pid) - before < 64  # was several times the logs


# --- 6. forwarding headers ------------------------------------------------------------------


def _anonymous_client(cluster: Cluster, forwarded: str) -> str:
    answer = httpx.get(f"{cluster.url}/stats", headers={"X-Forwarded-For": forwarded})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["client"])


def test_forwarded_for_is_ignored_unless_the_proxy_is_named(tmp_path: Path) -> None:
    plain = Cluster(tmp_path / "plain", db=str(tmp_path / "plain.db"))
    behind = Cluster(
        tmp_path / "proxied",
        db=str(tmp_path / "proxied.db"),
        server_args=("--forwarded-allow-ips", "127.0.0.1"),
    )
    for c in (plain, behind):
        c.root.mkdir()
        c.make_tokens()
        c.start_server()
    try:
        # Any local process could otherwise mint fresh anonymous identities (and quotas).
        assert _anonymous_client(plain, "203.0.113.7") == "anon:127.0.0.1"
        assert _anonymous_client(plain, "203.0.113.8") == "anon:127.0.0.1"
        assert _anonymous_client(behind, "203.0.113.7") == "anon:203.0.113.7"
    finally:
        plain.stop()
        behind.stop()


# --- 11. the agent's token on its command line ----------------------------------------------


def test_an_agent_takes_its_token_from_a_file_and_ps_shows_none(
    cluster: Cluster, tmp_path: Path
) -> None:
    token_file = tmp_path / "agent-token"
    token_file.write_text(cluster.tokens["agents"] + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "SANDRUN_TOKEN"}
    proc = subprocess.Popen(
        [
            SANDRUN,
            "agent",
            "--server",
            cluster.url,
            "--token-file",
            str(token_file),
            "--name",
            "from-file",
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: any(n.name == "from-file" and n.state == "active" for n in cluster.nodes()),
            timeout=30,
            what="the agent with a token file to register",
        )
        seen = " ".join(psutil.Process(proc.pid).cmdline())
        assert cluster.tokens["agents"] not in seen
    finally:
        proc.terminate()
        proc.wait(30)


# --- 13. tokens listed and revoked ----------------------------------------------------------


def test_a_revoked_token_is_refused_within_a_second_on_every_server(tmp_path: Path) -> None:
    c = Cluster(tmp_path, db=str(tmp_path / "server.db"))
    c.make_tokens()
    c.start_server()
    other = c.start_other_server()
    try:
        urls = [c.url, other]
        alice = _headers(c, "alice")
        for url in urls:  # both servers have the token in their caches now
            assert httpx.get(f"{url}/v1/jobs", headers=alice).status_code == 200
        listed = subprocess.run(
            [SANDRUN, "token", "list", "--db", c.db, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert c.tokens["alice"] not in listed.stdout  # never the secrets
        assert {"admin", "agents", "alice", "bob"} <= {t["name"] for t in _json(listed.stdout)}
        revoked = subprocess.run(
            [SANDRUN, "token", "revoke", "alice", "--db", c.db], capture_output=True, text=True
        )
        assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout
        at = time.monotonic()
        for url in urls:
            wait_for(
                lambda url=url: httpx.get(f"{url}/v1/jobs", headers=alice).status_code == 401,
                timeout=1.0 - (time.monotonic() - at),
                what=f"{url} to refuse the revoked token",
            )
        assert httpx.get(f"{c.url}/v1/jobs", headers=_headers(c, "bob")).status_code == 200
        again = subprocess.run(
            [SANDRUN, "token", "revoke", "nobody", "--db", c.db], capture_output=True, text=True
        )
        assert again.returncode != 0 and "no token has id or name 'nobody'" in again.stderr
    finally:
        c.stop()


def _json(text: str) -> list[dict[str, Any]]:
    import json

    data = json.loads(text)
    assert isinstance(data, list)
    return data


def test_pipelines_and_dependencies_reach_no_other_tenant(cluster: Cluster) -> None:
    """Bob's job and run are invisible to alice's `after`, `inputs_from` and pipeline calls;
    a template cannot reach the server's objects or hold it with a huge computation."""
    alice, bob = _headers(cluster, "alice"), _headers(cluster, "bob")
    api = cluster.url + "/v1"
    theirs = httpx.post(f"{api}/jobs", json={"command": ["true"]}, headers=bob).json()
    for spec in (
        {"command": ["true"], "after": [theirs["id"]]},
        {"command": ["true"], "after": [theirs["id"]], "inputs_from": {"x": f"{theirs['id']}:o"}},
    ):
        refused = httpx.post(f"{api}/jobs", json=spec, headers=alice)
        assert refused.status_code == 404 and refused.json()["field"] == "after"
    run = httpx.post(
        f"{api}/pipelines",
        json={"definition": {"name": "b", "steps": {"s": {"command": ["true"]}}}},
        headers=bob,
    ).json()
    for method, path in (
        ("GET", f"/pipelines/{run['id']}"),
        ("POST", f"/pipelines/{run['id']}/cancel"),
        ("POST", f"/pipelines/{run['id']}/retry"),
    ):
        answer = httpx.request(method, api + path, headers=alice)
        assert answer.status_code == 404 and answer.json()["code"] == "pipeline_not_found"
    assert httpx.get(f"{api}/pipelines", headers=alice).json() == []
    for template, words in (
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed"),
        ("{{ cycler.__init__.__globals__ }}", "not allowed"),  # no such global, either
        ("{{ 7 ** 9999999 }}", "too large"),
        ("{{ ((2 ** 64) ** 64) ** 64 }}", "too large"),
        ("{{ 'x' * 10 ** 12 }}", "not allowed"),
        ("{{ range(10 ** 9) | list }}", "Range too big"),
    ):
        bad = {"name": "evil", "steps": {"s": {"shell": template}}}
        refused = httpx.post(f"{api}/pipelines", json={"definition": bad}, headers=alice)
        assert refused.status_code == 422, template
        assert words in refused.json()["message"], (template, refused.json())
    assert httpx.get(f"{api}/pipelines", headers=alice).json() == []  # nothing recorded


def test_the_pool_s_money_and_trust_are_no_user_s_to_change(cluster: Cluster) -> None:
    """A user may not credit themselves, read another's balance, account or job ledger,
    check the ledger, or quarantine a node; a rogue agent's metering is bounded by what the
    server saw (tests/contract/test_ledger.py) and its votes by its operator."""
    api = f"{cluster.url}/v1"
    alice, bob = _headers(cluster, "alice"), _headers(cluster, "bob")
    theirs = httpx.post(f"{api}/jobs", json={"shell": "true"}, headers=bob).json()
    for method, path, body in (
        ("POST", "/credit", {"owner": "alice", "amount": 1000}),
        ("GET", "/balance?owner=bob", None),
        ("GET", "/ledger?account=user:bob", None),
        ("GET", "/ledger?account=escrow", None),
        ("GET", "/ledger/check", None),
        ("POST", "/nodes/honest/quarantine", None),
        ("POST", "/nodes/honest/release", None),
    ):
        answer = httpx.request(method, api + path, json=body, headers=alice)
        assert answer.status_code == 403, (path, answer.text)
    hidden = httpx.get(f"{api}/ledger", params={"job": theirs["id"]}, headers=alice)
    assert hidden.status_code == 404 and hidden.json()["code"] == "job_not_found"
    assert httpx.get(f"{api}/balance", headers=alice).json()["available"] == 0
    standing = httpx.get(f"{api}/pool/nodes", headers=alice).json()
    assert not next(n for n in standing if n["name"] == "honest")["reputation"]["quarantined"]
    for bad in ("1-of-99", "-1", {"k": 0, "n": 1}, {"k": 1, "n": 1, "max_replicas": 99}):
        spec = {"shell": "true", "consensus": bad}
        refused = httpx.post(f"{api}/jobs", json=spec, headers=alice)
        assert refused.status_code == 422 and refused.json()["field"].startswith("consensus")


def test_a_volume_is_its_owner_s_alone_and_mounts_only_inside_the_sandbox(
    cluster: Cluster,
) -> None:
    """Another tenant cannot mount, list, read or delete a volume, by name or by id; a
    mount path or secret file cannot cover the system the job runs on; and a job cannot
    reach the bytes of a volume it did not mount on the agent's disk."""
    api = f"{cluster.url}/v1"
    alice, bob = _headers(cluster, "alice"), _headers(cluster, "bob")
    made = httpx.post(f"{api}/volumes", json={"name": "private", "size": 10}, headers=alice)
    assert made.status_code == 201, made.text
    volume_id = made.json()["id"]
    spec = {"shell": "echo alice-only > /volumes/private/f", "volumes": ["private"]}
    written = httpx.post(f"{api}/jobs", json=spec, headers=alice).json()
    with cluster.client("alice") as client:
        assert client.get(written["id"]).wait(60).status is JobState.COMPLETED
    before = httpx.get(f"{api}/jobs", headers=bob).json()
    for mount in ({"name": "private"}, {"volume_id": volume_id}):
        taken = {"shell": "cat /volumes/private/f", "volumes": [mount]}
        refused = httpx.post(f"{api}/jobs", json=taken, headers=bob)
        assert refused.status_code == 404 and refused.json()["code"] == "volume_not_found"
    assert httpx.get(f"{api}/jobs", headers=bob).json() == before  # nothing recorded
    assert httpx.get(f"{api}/volumes", headers=bob).json() == []
    for method in ("GET", "DELETE"):
        answer = httpx.request(method, f"{api}/volumes/{volume_id}", headers=bob)
        assert answer.status_code == 404, answer.text
    # Mount points that would cover what the job runs, or leave the sandbox's own paths.
    for field, bad in (
        ("volumes", {"name": "private", "mount_path": "/usr/bin"}),
        ("volumes", {"name": "private", "mount_path": "/etc"}),
        ("volumes", {"name": "private", "mount_path": "/data/../etc"}),
        ("volumes", {"name": "private", "mount_path": "relative"}),
        ("secrets", {"name": "K", "file": "/proc/self/environ"}),
        ("secrets", {"name": "K", "file": "/tmp/../etc/shadow"}),
    ):
        refused = httpx.post(f"{api}/jobs", json={"shell": "true", field: [bad]}, headers=alice)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["field"].startswith(field), refused.json()
    # Bob's own job looks for the bytes where the agent keeps them: hidden from every job.
    node_dir = cluster.root / "agent-honest" / "volumes" / volume_id
    assert (node_dir / "f").read_text() == "alice-only\n"
    probe = {"shell": f"cat {node_dir}/f; ls {node_dir.parent}; true"}
    snooped = httpx.post(f"{api}/jobs", json=probe, headers=bob).json()
    with cluster.client("bob") as client:
        job = client.get(snooped["id"]).wait(60)
        assert "alice-only" not in job.log_text() and volume_id not in job.log_text("stdout")


def test_a_secret_is_given_to_its_owner_s_jobs_alone(cluster: Cluster) -> None:
    """Secrets are per owner: bob's job naming alice's secret is refused; listing shows
    names only; a value is never sent back."""
    api = f"{cluster.url}/v1"
    alice, bob = _headers(cluster, "alice"), _headers(cluster, "bob")
    value = "alice-token-7d1e"
    put = httpx.put(f"{api}/secrets/DEPLOY_KEY", json={"value": value}, headers=alice)
    assert put.status_code == 204
    refused = httpx.post(
        f"{api}/jobs", json={"shell": "env", "secrets": ["DEPLOY_KEY"]}, headers=bob
    )
    assert refused.status_code == 404 and refused.json()["code"] == "secret_not_found"
    assert httpx.get(f"{api}/secrets", headers=bob).json() == []
    mine = httpx.get(f"{api}/secrets", headers=alice)
    assert "DEPLOY_KEY" in mine.text and value not in mine.text
    bad = httpx.put(f"{api}/secrets/not-a-name", json={"value": "x"}, headers=alice)
    assert bad.status_code == 422 and "name" in bad.json()["field"]
    assert httpx.delete(f"{api}/secrets/DEPLOY_KEY", headers=bob).status_code == 404
    assert "DEPLOY_KEY" in httpx.get(f"{api}/secrets", headers=alice).text


def test_a_rogue_agent_cannot_write_freezes_into_another_node_s_job(
    cluster: Cluster, rogue: Rogue
) -> None:
    """A heartbeat names the attempts its node froze or thawed; one naming an attempt on
    another node adds nothing to that job's events (nor does it pause anything)."""
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = alice.run("sleep 30")
        wait_for(lambda: job.refresh().is_running, what="the job to start on n1")
        key = {"job_id": job.id, "attempt": 1}
        told = rogue.post("heartbeat", {"node": rogue.node, "frozen": [key], "thawed": [key]})
        assert told.status_code == 200 and told.json()["paused"] == []
        assert not {"frozen", "thawed"} & {e.kind for e in job.events}
        assert job.refresh().status is JobState.RUNNING
        job.cancel().wait(30)


def test_a_rogue_agent_cannot_fake_a_checkpoint(cluster: Cluster, rogue: Rogue) -> None:
    """A checkpoint whose bytes were never uploaded is refused, the attempt left running;
    `checkpointed` with no checkpoint reads as the plain exit it is: nothing kept, no
    free requeue."""
    with cluster.client("alice") as alice:
        job_id = _rogue_job(alice)
        claim = rogue.claim()
        signed = rogue.identity.sign(
            result_claim(claim.job.id, claim.attempt, claim.job.spec, 85, {})
        )
        base = {"exit_code": 85, "failure_reason": "checkpointed", "signature": signed}
        missing = {"attempt": 1, "path": "cp", "digest": "0" * 64, "size": 1}
        answer = rogue.post(
            "complete", {"ref": claim.ref.model_dump(), "result": {**base, "checkpoint": missing}}
        )
        assert answer.status_code >= 400 and "checkpoint was not uploaded" in answer.text
        assert alice.get(job_id).record.state is JobState.RUNNING
        answer = rogue.post("complete", {"ref": claim.ref.model_dump(), "result": base})
        assert answer.status_code == 200, answer.text
        job = alice.get(job_id)
        assert job.record.state is JobState.FAILED
        assert job.record.failure_reason is FailureReason.EXIT_CODE
        assert job.record.checkpoint is None and job.checkpoints() == []


# --- exec into a running job (issue 25) ------------------------------------------------------


def _ws(cluster: Cluster, path: str, token: str | None, first: str | None = None) -> Any:
    """Open a WebSocket to the server as `token`'s holder, say `first`; what came back
    (JSON messages) and the close code."""
    headers = {"Authorization": f"Bearer {cluster.tokens[token]}"} if token else {}
    address = cluster.url.replace("http://", "ws://") + path
    said: list[Any] = []
    with connect(address, additional_headers=headers, open_timeout=10) as ws:
        try:
            if first is not None:
                ws.send(first)  # refused before it is read: the close comes first
            for message in ws:
                said.append(json.loads(message))
        except ConnectionClosed:
            pass
        return said, ws.close_code


def _honest_node(cluster: Cluster) -> str:
    with cluster.client("admin") as admin:
        return next(n.id for n in admin.nodes() if n.name == "honest")


def test_an_exec_is_refused_to_another_tenant_and_to_bad_requests(cluster: Cluster) -> None:
    """Only the job's owner (or an admin) may exec into it; a request that is not one is
    refused naming its field; no token, or an agent's, gets nothing; none is recorded."""
    with cluster.client("alice") as alice:
        job = alice.run("sleep 60")
        wait_for(lambda: job.refresh().is_running, what="the job to start on the honest agent")
        path, run = f"/v1/jobs/{job.id}/exec", json.dumps({"argv": ["cat", "/etc/hostname"]})
        said, code = _ws(cluster, path, "bob", run)
        assert code == 4404 and said[0]["error"]["code"] == "job_not_found"
        said, code = _ws(cluster, path, None, run)
        assert code == 4401
        said, code = _ws(cluster, path, "agents", run)
        assert code == 4403
        for bad, field in [
            ({"argv": []}, "argv"),
            ({"argv": ["sh", "nul\u0000byte"]}, "argv"),
            ({"argv": ["true"], "tty": True, "rows": 0}, "rows"),
            ({"argv": ["true"], "uid": 0}, "uid"),
            ({"argv": ["true"], "term": "x; rm -rf /"}, "term"),
        ]:
            said, code = _ws(cluster, path, "alice", json.dumps(bad))
            assert code == 4400 and said[0]["error"]["field"] == field, (bad, said)
        assert not [e for e in job.events if e.kind.startswith("exec")]
        job.cancel().wait(30)


def test_a_rogue_agent_cannot_take_another_node_s_exec(cluster: Cluster, rogue: Rogue) -> None:
    """The ask goes down the job's node's channel only: another operator's agent can open
    no channel as that node, and no session it was not sent (nor one it guesses)."""
    cluster.add_tokens(Role.AGENT, "mallory")
    honest = _honest_node(cluster)
    said, code = _ws(cluster, f"/v1/agent/channel?node={honest}", "mallory")
    assert code == 4403 and said[0]["error"]["code"] == "forbidden"
    said, code = _ws(cluster, f"/v1/agent/channel?node={honest}", "alice")
    assert code == 4403
    with cluster.client("alice") as alice:
        job = alice.run("echo secret-of-alice > s; sleep 60")
        wait_for(lambda: job.refresh().is_running, what="the job to start")
        wait_for(lambda: job.exec("cat s").stdout == b"secret-of-alice\n", what="an exec")
        # Sessions are single-use and named by 192 random bits: a guess finds none.
        guess = f"/v1/agent/exec/{'A' * 32}?node={rogue.node}"
        said, code = _ws(cluster, guess, "agents")
        assert code == 4503 and "no exec session" in said[0]["error"]["message"]
        job.cancel().wait(30)


def test_an_exec_sees_no_more_than_its_job(cluster: Cluster) -> None:
    """Inside the job's sandbox, the agent's own state (its key, other jobs' scratch) is
    out of sight, and the job filter holds for the exec too."""
    with cluster.client("alice") as alice:
        job = alice.run("sleep 60")
        wait_for(lambda: job.refresh().is_running, what="the job to start")
        work = cluster.root / "agent-honest"
        assert (work / "identity.key").exists()
        assert job.exec(f"test -e {work}/identity.key").exit_code == 1
        # Of the agent's runs, only the job's own directory is there (its pid records not).
        assert b".pid" not in job.exec(f"ls -a {work}/runs").stdout
        # A user namespace needs no privilege: only the job filter refuses it.
        userns = job.exec("unshare --user true")
        assert userns.exit_code != 0 and b"not permitted" in userns.stderr, userns
        # setns is open to the exec (nsenter needs it), but without capabilities it is
        # refused: the agent's namespaces stay out of reach.
        assert job.exec("nsenter --target 1 --mount true").exit_code != 0
        job.cancel().wait(30)
