"""Environments through a real server and agent (issue 24): a small package from PyPI
built with uv once and reused by the next job (listed, from a requirements.txt in the
job's code, or named ahead), a function call running on it, a broken requirement failing
`environment_error` with uv's message, and requirements that would reach the agent's own
disk or index refused."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandrun.client import App
from sandrun.errors import InvalidSpec
from sandrun.states import FailureReason, JobState
from tests.integration.cluster import SANDRUN, Cluster

SIX = "six==1.16.0"  # small, pure Python, on PyPI for years
BAD_REQUIREMENTS = (
    "-r /etc/shadow",
    "--index-url http://evil.example/simple",
    "-e /",
    "pkg @ file:///etc/passwd",
    "pkg @ /root/secret.whl",
    "./local.whl",
)
PRINT_SIX = "python -c 'import six, sys; print(six.__version__, sys.prefix)'"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("envs")
    c = Cluster(root, db=str(root / "server.db"))
    c.make_tokens()
    c.start_server()
    c.start_agent("builder", cpus=2)
    yield c
    c.stop()


def _built(cluster: Cluster) -> list[Path]:
    envs = cluster.root / "agent-builder" / "envs"
    return sorted(p for p in envs.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_an_environment_is_built_once_and_reused(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client() as alice:
        first = alice.run(PRINT_SIX, environment={"requirements": [SIX]}, upload_code=False)
        assert first.wait(180).status is JobState.COMPLETED, first.log_text()
        assert first.log_text("stdout").startswith("1.16.0 ")
        assert "six==1.16.0" in first.log_text("stderr")  # uv's output starts its logs
        (built,) = _built(cluster)
        assert first.log_text("stdout").split()[1] == str(built)
        # The same requirements from a requirements.txt in the job's code: no new build.
        code = tmp_path / "code"
        code.mkdir()
        (code / "requirements.txt").write_text(f"# pinned\n{SIX}\n")
        digest = alice.upload_directory(code)
        second = alice.run(PRINT_SIX, environment={"file": "requirements.txt"}, code=digest,
                           upload_code=False)  # fmt: skip
        assert second.wait(180).status is JobState.COMPLETED, second.log_text()
        assert second.log_text("stdout") == first.log_text("stdout")
        assert second.log_text("stderr") == ""  # nothing was built
        assert _built(cluster) == [built]
        # The environment is read-only to the jobs that share it.
        tamper = alice.run(f"touch {built}/bin/x", environment={"requirements": [SIX]},
                           upload_code=False)  # fmt: skip
        assert tamper.wait(60).status is JobState.FAILED


def test_a_named_environment_from_the_cli_and_the_public_api(cluster: Cluster) -> None:
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}
    req = cluster.root / "requirements.txt"
    req.write_text(f"{SIX}\n")
    for args in (["env", "create", "ml", "-r", str(req)], ["env", "list"]):
        done = subprocess.run([SANDRUN, *args], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert "ml" in done.stdout and SIX in done.stdout
    with cluster.client() as alice:
        job = alice.run(PRINT_SIX, environment="ml", upload_code=False)
        assert job.wait(180).status is JobState.COMPLETED, job.log_text()
        with pytest.raises(InvalidSpec, match="container"):
            alice.run("true", image="nvcr.io/nvidia/pytorch:24.01-py3")
        mapped = alice.run(PRINT_SIX, image="ml", upload_code=False)
        assert mapped.wait(60).status is JobState.COMPLETED, mapped.log_text()
    listed = httpx.get(f"{cluster.url}/environments",
                       headers={"Authorization": f"Bearer {cluster.tokens['alice']}"})  # fmt: skip
    names = [e["name"] for e in listed.json()["environments"]]
    assert names[0] == "default" and "ml" in names
    others = httpx.get(f"{cluster.url}/environments",
                       headers={"Authorization": f"Bearer {cluster.tokens['bob']}"})  # fmt: skip
    assert "ml" not in [e["name"] for e in others.json()["environments"]]


def test_a_function_call_runs_on_its_environment(cluster: Cluster) -> None:
    with cluster.client() as client:
        app = App("envs", client=client)

        @app.function(requirements=[SIX])
        def version(x: int) -> tuple[str, int]:
            import six  # type: ignore[import-untyped]

            return six.__version__, x * 2

        assert version.remote(21) == ("1.16.0", 42)


def test_a_broken_requirement_fails_environment_error(cluster: Cluster) -> None:
    with cluster.client() as alice:
        job = alice.run("true", environment={"requirements": ["sandrun-no-such-package-xyz==9.9"]},
                        upload_code=False)  # fmt: skip
        record = job.wait(180).record
        assert record.failure_reason is FailureReason.ENVIRONMENT_ERROR
        assert "sandrun-no-such-package-xyz" in (record.message or "")
        assert "sandrun-no-such-package-xyz" in job.log_text("stderr")  # uv's own words


def test_requirements_that_reach_the_agent_s_disk_or_index_are_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    with cluster.client() as alice:
        for bad in BAD_REQUIREMENTS:
            with pytest.raises(InvalidSpec, match="package specifier"):
                alice.run("true", environment={"requirements": [bad]}, upload_code=False)
        # The same in a requirements.txt of the job's code fails at the agent, before uv.
        code = tmp_path / "code"
        code.mkdir()
        (code / "requirements.txt").write_text("-r /etc/shadow\n")
        digest = alice.upload_directory(code)
        job = alice.run("true", environment={"file": "requirements.txt"}, code=digest,
                        upload_code=False)  # fmt: skip
        record = job.wait(60).record
        assert record.failure_reason is FailureReason.ENVIRONMENT_ERROR
        assert "package specifier" in (record.message or "")
        # A package only published as source would run its build code on the agent,
        # outside the sandbox: wheels only (sgmllib3k 1.0.0 has been source-only since 2010).
        sdist = alice.run("true", environment={"requirements": ["sgmllib3k==1.0.0"]},
                          upload_code=False)  # fmt: skip
        record = sdist.wait(180).record
        assert record.failure_reason is FailureReason.ENVIRONMENT_ERROR
        assert "no usable wheels" in (record.message or ""), record.message
