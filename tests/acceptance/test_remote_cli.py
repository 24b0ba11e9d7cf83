"""The same `sandrun` commands against a server (SANDRUN_URL), as a user types them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.conftest import SANDRUN
from tests.integration.cluster import Cluster


def _remote(cluster: Cluster, token: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDRUN, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )

    return run


def test_every_core_command_works_against_a_server(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    sandrun = _remote(cluster, cluster.tokens["alice"], tmp_path)

    ran = sandrun(
        "run",
        "--output",
        "report.txt",
        "--",
        "sh",
        "-c",
        "echo hello; echo warn >&2; echo data > report.txt; exit 6",
    )
    assert ran.returncode == 6
    assert ran.stdout == "hello\n" and "warn" in ran.stderr
    [job] = json.loads(sandrun("jobs", "--json").stdout)
    assert (job["state"], job["exit_code"], job["owner"]) == ("failed", 6, "alice")
    assert sandrun("logs", job["id"]).stdout == "hello\n"
    assert sandrun("logs", "-f", job["id"]).stdout == "hello\n"  # ends: the job has ended
    status = json.loads(sandrun("status", job["id"], "--json").stdout)
    assert status["attempt_list"][0]["node"].startswith("n1/")
    assert sandrun("outputs", job["id"], "--download", str(tmp_path / "dl")).returncode == 0
    assert (tmp_path / "dl" / "report.txt").read_text() == "data\n"
    assert sandrun("wait", job["id"]).returncode == 6

    assert sandrun("run", "--timeout", "1", "--", "sleep", "30").returncode == 124
    submitted = sandrun("submit", "--", "sleep", "30").stdout.strip()
    assert sandrun("cancel", submitted).returncode == 0
    assert sandrun("wait", submitted, "--timeout", "30").returncode == 130

    nodes = json.loads(sandrun("nodes", "--json").stdout)
    assert [(n["name"], n["state"]) for n in nodes] == [("n1", "active")]
    assert "n1" in sandrun("nodes").stdout


def test_a_token_from_the_cli_works_and_a_bad_one_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    created = subprocess.run(
        [SANDRUN, "token", "create", "--db", cluster.db, "--name", "carol"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0
    token = created.stdout.strip()
    assert token.startswith("sr_")
    assert _remote(cluster, token, tmp_path)("jobs", "--json").stdout.strip() == "[]"
    refused = _remote(cluster, "sr_not_a_token", tmp_path)("jobs")
    assert refused.returncode == 1
    assert "that token is not valid" in refused.stderr and "Traceback" not in refused.stderr


def test_another_users_job_is_not_found(cluster: Cluster, tmp_path: Path) -> None:
    alice = _remote(cluster, cluster.tokens["alice"], tmp_path)
    bob = _remote(cluster, cluster.tokens["bob"], tmp_path)
    job_id = alice("submit", "--", "true").stdout.strip()
    for command in ("status", "logs", "cancel", "outputs"):
        denied = bob(command, job_id)
        assert denied.returncode == 2
        assert f"no job has id '{job_id}'" in denied.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_a_server_without_auth_only_binds_loopback(tmp_path: Path, host: str) -> None:
    refused = subprocess.run(
        [SANDRUN, "server", "--db", str(tmp_path / "s.db"), "--host", host, "--no-auth"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert f"refusing to serve {host} without auth" in refused.stderr


def test_gc_through_the_server_is_for_admins(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    alice = _remote(cluster, cluster.tokens["alice"], tmp_path)
    assert alice("run", "--", "echo", "old news").returncode == 0
    [job] = json.loads(alice("jobs", "--json").stdout)

    refused = alice("gc", "--older-than", "0.001s")
    assert refused.returncode == 1 and "admin" in refused.stderr
    assert alice("logs", job["id"]).stdout == "old news\n"

    admin = _remote(cluster, cluster.tokens["admin"], tmp_path)
    report = json.loads(admin("gc", "--older-than", "0.001s", "--json").stdout)
    assert report["jobs_logs_removed"] == 1
    # A heartbeating agent is never forgotten, however short the cutoff.
    assert report["nodes_removed"] == 0
    assert [n["name"] for n in json.loads(alice("nodes", "--json").stdout)] == ["n1"]
    assert alice("logs", job["id"]).stdout == ""
    assert json.loads(alice("status", job["id"], "--json").stdout)["state"] == "completed"


def test_a_list_of_servers_fails_over_to_one_that_answers(cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as dead:  # bound, never listening: connections are refused
        dead.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{dead.getsockname()[1]}"
        env = {
            **os.environ,
            "SANDRUN_URL": f"{down},{cluster.url}",
            "SANDRUN_TOKEN": cluster.tokens["alice"],
        }
        listed = subprocess.run(
            [SANDRUN, "jobs", "--json"], capture_output=True, text=True, env=env, timeout=60
        )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_a_run_sent_to_a_server_takes_the_current_directory(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("n1")
    sandrun = _remote(cluster, cluster.tokens["alice"], tmp_path)
    (tmp_path / "main.py").write_text("print(open('data.txt').read())")
    (tmp_path / "data.txt").write_text("sent along")

    ran = sandrun("run", "--", "python3", "main.py")
    assert (ran.returncode, ran.stdout) == (0, "sent along\n"), ran.stderr
    kept_back = sandrun("run", "--no-upload", "--", "python3", "main.py")
    assert kept_back.returncode != 0
    assert "No such file" in kept_back.stderr
