"""The public sandrun REST API at the server root, exercised by a client written only from
its description (plain httpx and websockets; not sandrun's SDK)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.sync.client import connect as ws_connect

from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("public")
    cluster = Cluster(root, db=str(root / "server.db"))
    cluster.make_tokens()
    cluster.start_server()
    cluster.start_agent("w1", cpus=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def api(server: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _tarball(files: dict[str, str], top: str = "project") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            entry = tarfile.TarInfo(f"{top}/{name}")
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return raw.getvalue()


def _finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll /status, as this API's clients do, until the job has ended."""

    def ended() -> dict[str, Any] | None:
        status: dict[str, Any] = api.get(f"/status/{job_id}").json()
        return status if status["status"] in ("completed", "failed") else None

    return wait_for(ended, timeout=60, what=f"job {job_id} to end")


def test_the_root_says_what_it_is(api: httpx.Client) -> None:
    body = api.get("/").json()
    assert (body["service"], body["status"]) == ("sandrun", "running")
    assert body["description"]


def test_a_tarball_project_runs_and_its_outputs_download(api: httpx.Client) -> None:
    project = _tarball(
        {
            "main.py": "import os, sys\n"
            "os.makedirs('out', exist_ok=True)\n"
            "text = open('data/words.txt').read().upper()\n"
            "open('out/result.txt', 'w').write(text)\n"
            "print('args', sys.argv[1:], os.environ['MODE'])\n"
            "print('to stderr', file=sys.stderr)\n",
            "data/words.txt": "hello world",
        }
    )
    manifest = {
        "entrypoint": "main.py",
        "args": ["--fast"],
        "env": {"MODE": "test"},
        "outputs": ["out/"],
        "timeout": 60,
        "memory_mb": 256,
    }
    answer = api.post(
        "/submit",
        files={"files": ("project.tar.gz", project, "application/gzip")},
        data={"manifest": json.dumps(manifest)},
    )
    assert answer.status_code == 200, answer.text
    submitted = answer.json()
    assert submitted["status"] == "queued" and isinstance(submitted["position"], int)
    job_id = submitted["job_id"]

    status = _finished(api, job_id)
    assert status["status"] == "completed"
    meta = status["execution_metadata"]
    assert meta["exit_code"] == 0 and meta["interpreter"] == "python3"
    assert meta["wall_time_ms"] > 0 and meta["memory_peak_mb"] > 0
    assert meta["memory_peak_bytes"] == int(meta["memory_peak_mb"] * 1024 * 1024)
    assert len(status["job_hash"]) == 64
    result = status["output_files"]["out/result.txt"]
    assert result["size_bytes"] == 11
    assert result["sha256"] == hashlib.sha256(b"HELLO WORLD").hexdigest()

    logs = api.get(f"/logs/{job_id}").json()
    assert logs == {"stdout": "args ['--fast'] test\n", "stderr": "to stderr\n"}

    listing = api.get(f"/outputs/{job_id}").json()
    assert (listing["job_id"], listing["status"], listing["total_files"]) == (
        job_id,
        "completed",
        1,
    )
    [entry] = listing["files"]
    assert (entry["name"], entry["size"], entry["mime_type"]) == (
        "out/result.txt",
        11,
        "text/plain",
    )
    assert entry["size_formatted"] == "11 B"
    assert api.get(entry["download_url"]).content == b"HELLO WORLD"

    everything = api.get(f"/download/{job_id}")
    assert everything.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(everything.content)) as tar:
        assert tar.extractfile("out/result.txt").read() == b"HELLO WORLD"  # type: ignore[union-attr]


def test_a_single_code_file_is_found_as_the_entrypoint(api: httpx.Client) -> None:
    answer = api.post("/submit", files={"files": ("run.sh", b"echo from a shell script\n")})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    status = _finished(api, job_id)
    assert status["execution_metadata"]["interpreter"] == "bash"
    assert api.get(f"/logs/{job_id}").json()["stdout"] == "from a shell script\n"


def test_a_zip_with_its_own_job_json(api: httpx.Client) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("app.js", "console.log('node says', process.argv.slice(2).join(' '))\n")
        archive.writestr("tool.py", "print('python says hi')\n")
        archive.writestr("job.json", json.dumps({"entrypoint": "tool.py", "args": []}))
    answer = api.post("/submit", files={"files": ("bundle.zip", raw.getvalue())})
    job_id = answer.json()["job_id"]
    assert _finished(api, job_id)["status"] == "completed"
    assert api.get(f"/logs/{job_id}").json()["stdout"] == "python says hi\n"


def test_logs_stream_live_over_a_websocket(api: httpx.Client, server: Cluster) -> None:
    script = (
        "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
    )
    job_id = api.post("/submit", files={"files": ("main.py", script.encode())}).json()["job_id"]
    url = server.url.replace("http://", "ws://") + f"/logs/{job_id}/stream"
    messages = []
    with ws_connect(url, open_timeout=10) as socket:
        for text in socket:
            messages.append(json.loads(text))
    assert messages[:3] == [{"stream": "stdout", "line": f"tick {i}"} for i in range(3)]
    assert messages[-1] == {"status": "completed"}


def test_the_result_is_signed_by_its_worker(api: httpx.Client) -> None:
    answer = api.post("/submit", files={"files": ("main.py", b"open('o.txt','w').write('x')\n")})
    job_id = answer.json()["job_id"]
    status = _finished(api, job_id)
    worker = status["worker_metadata"]
    claim = {
        "v": 1,
        "job_id": job_id,
        "attempt": worker["attempt"],
        "job_hash": status["job_hash"],
        "exit_code": status["execution_metadata"]["exit_code"],
        "outputs": {path: f["sha256"] for path, f in status["output_files"].items()},
    }
    signed = json.dumps(claim, sort_keys=True, separators=(",", ":")).encode()
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(worker["worker_id"]))
    key.verify(base64.b64decode(worker["signature"]), signed)  # raises if it does not match
    health = api.get("/health").json()
    assert worker["worker_id"] in [w["worker_id"] for w in health["workers"]]
    # The server countersigns the agent's signature with the key /health names, written
    # from the description alone: {v, countersign, attempt, worker_id, signature}.
    assert worker["server_id"] == health["worker_id"] != worker["worker_id"]
    counter = {
        "v": 1,
        "countersign": job_id,
        "attempt": worker["attempt"],
        "worker_id": worker["worker_id"],
        "signature": worker["signature"],
    }
    server_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(health["worker_id"]))
    server_key.verify(
        base64.b64decode(worker["countersignature"]),
        json.dumps(counter, sort_keys=True, separators=(",", ":")).encode(),
    )


def test_the_server_s_identity_is_kept_and_shown(server: Cluster, api: httpx.Client) -> None:
    shown = subprocess.run(
        [SANDRUN, "server", "--db", server.db, "--show-identity"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert api.get("/health").json()["worker_id"] == shown
    assert len(base64.b64decode(shown)) == 32  # a raw Ed25519 public key
    assert f"identity (worker_id) {shown}" in server.server_logs()


def test_pages_on_any_origin_may_call_the_public_api_but_not_v1(api: httpx.Client) -> None:
    page = {"Origin": "https://pages.example"}
    preflight = {**page, "Access-Control-Request-Method": "POST"}
    answer = api.options("/submit", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answer.headers
    for path in ("/", "/health", "/status/nope"):
        assert api.get(path, headers=page).headers["access-control-allow-origin"] == "*"
    # The token API and the dashboard never answer another origin, preflight or not.
    for path in ("/v1/jobs", "/v1/health", "/ui/jobs"):
        assert "access-control-allow-origin" not in api.get(path, headers=page).headers
        refused = api.options(path, headers=preflight)
        assert "access-control-allow-origin" not in refused.headers
        assert refused.status_code in (404, 405)


@pytest.mark.parametrize(
    ("files", "manifest", "says"),
    [
        (None, None, "no files"),
        ([("files", ("main.py", b"print(1)"))], "{not json", "not valid JSON"),
        ([("files", ("main.py", b"print(1)"))], '{"timeout": -5}', "timeout"),
        ([("files", ("notes.txt", b"hi"))], None, "no entrypoint"),
        ([("files", ("main.py", b"print(1)"))], '{"entrypoint": "gone.py"}', "gone.py"),
        ([("files", ("a.py", b"1"))], '{"entrypoint": "a.py", "interpreter": "cobol"}', "cobol"),
        ([("files", ("a.py", b"1"))], '{"entrypoint": "a.py", "environment": "nope"}', "nope"),
        ([("files", ("x.tar.gz", b"not a tarball"))], None, "not a readable tar"),
    ],
)
def test_bad_submissions_get_the_documented_error(
    api: httpx.Client, files: Any, manifest: str | None, says: str
) -> None:
    answer = api.post(
        "/submit",
        files=files or {"unrelated": ("x", b"")},
        data={"manifest": manifest} if manifest else None,
    )
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]


def test_environments_health_and_stats(api: httpx.Client) -> None:
    names = [e["name"] for e in api.get("/environments").json()["environments"]]
    assert "default" in names
    health = api.get("/health").json()
    assert health["status"] == "healthy" and health["load"]["workers"] == 1
    stats = api.get("/stats").json()
    assert stats["client"] == "anon:127.0.0.1"
    assert stats["quota"]["concurrent_jobs"]["limit"] == 2
    assert "queue_length" in stats["system"]


def test_an_address_over_its_limit_gets_429(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, db=str(tmp_path / "s.db"), server_args=("--anon-concurrent", "1"))
    cluster.make_tokens()
    cluster.start_server()  # no agent: the first job stays queued
    try:
        with httpx.Client(base_url=cluster.url, timeout=30) as api:
            first = api.post("/submit", files={"files": ("main.py", b"print(1)")})
            assert first.status_code == 200
            second = api.post("/submit", files={"files": ("main.py", b"print(2)")})
            assert second.status_code == 429
            assert second.json()["retry_after"] > 0 and "limit is 1" in second.json()["error"]
            # With a token the address limits do not apply, and the job is the user's.
            auth = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
            third = api.post("/submit", files={"files": ("main.py", b"print(3)")}, headers=auth)
            assert third.status_code == 200
            assert api.get(f"/status/{third.json()['job_id']}").status_code == 404  # not anon's
    finally:
        cluster.stop()


def test_operators_can_require_a_token_or_turn_it_off(tmp_path: Path) -> None:
    for mode, expected in (("token", 401), ("off", 404)):
        cluster = Cluster(
            tmp_path / mode, db=str(tmp_path / f"{mode}.db"), server_args=("--public-api", mode)
        )
        cluster.root.mkdir()
        cluster.make_tokens()
        cluster.start_server()
        try:
            answer = httpx.post(f"{cluster.url}/submit", files={"files": ("main.py", b"1")})
            assert answer.status_code == expected
            assert "error" in answer.json()
        finally:
            cluster.stop()


def _wheel() -> bytes:
    """A minimal pure-Python wheel, so installing requirements needs no network."""
    raw = io.BytesIO()
    info = "greet-1.0.dist-info"
    with zipfile.ZipFile(raw, "w") as wheel:
        wheel.writestr("greet.py", "def hello():\n    return 'hello from a wheel'\n")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", f"greet.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n")
    return raw.getvalue()


def test_requirements_are_installed_before_the_run(api: httpx.Client) -> None:
    files = [
        ("files", ("main.py", b"import greet\nprint(greet.hello())\n")),
        ("files", ("requirements.txt", b"./greet-1.0-py3-none-any.whl\n")),
        ("files", ("greet-1.0-py3-none-any.whl", _wheel())),
    ]
    answer = api.post(
        "/submit", files=files, data={"manifest": '{"requirements": "requirements.txt"}'}
    )
    job_id = answer.json()["job_id"]
    status = _finished(api, job_id)
    assert status["status"] == "completed", api.get(f"/logs/{job_id}").json()
    assert api.get(f"/logs/{job_id}").json()["stdout"] == "hello from a wheel\n"


def test_a_named_environment_runs_on_its_python(api: httpx.Client) -> None:
    code = b"import cloudpickle\nprint('cloudpickle is here')\n"  # the agent's Python has it
    answer = api.post(
        "/submit",
        files={"files": ("main.py", code)},
        data={"manifest": '{"environment": "default"}'},
    )
    job_id = answer.json()["job_id"]
    status = _finished(api, job_id)
    assert status["execution_metadata"]["environment"] == "default"
    assert api.get(f"/logs/{job_id}").json()["stdout"] == "cloudpickle is here\n"
