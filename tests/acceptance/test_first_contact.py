"""What a new user trips on first (issue 20): a run that waits says why, bad input is
refused early and all at once, outputs that match nothing are not silent."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from sandrun.client import connect
from sandrun.errors import InvalidSpec
from tests.acceptance.conftest import SANDRUN, Cli, as_json
from tests.helpers import wait_for
from tests.integration.cluster import Cluster


def _remote_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}


def test_run_says_why_its_job_waits_and_sigterm_cancels_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("small", cpus=1)
    wait_for(lambda: len(cluster.nodes()) == 1, timeout=30, what="the agent to register")
    proc = subprocess.Popen(
        [SANDRUN, "run", "--gpus", "8xh100", "--", "echo", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_remote_env(cluster),
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    said = ""
    while "waiting:" not in said:  # stderr closes only at exit: a missing line times out
        line = proc.stderr.readline()
        assert line, f"sandrun run ended without saying why its job waits: {said}"
        said += line
    assert "fits no registered node" in said and "8xh100" in said
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest
    assert "cancelled" in rest
    with cluster.client() as client:
        assert [j.state.value for j in client.jobs().jobs] == ["cancelled"]


def test_an_environment_too_large_to_exec_is_refused_at_submit(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "cwd" / "big.yaml"  # (a command line could not even carry it)
    spec.write_text(f"shell: 'true'\nenv: {{BIG: {'x' * 200_000}}}\n")
    proc = cli("submit", "-f", str(spec))
    assert proc.returncode == 2
    assert "env.BIG" in proc.stderr and "KiB" in proc.stderr
    assert as_json(cli("jobs", "--json")) == []  # nothing was recorded


def test_every_bad_flag_is_reported_at_once(cli: Cli) -> None:
    proc = cli("submit", "--cpus", "-1", "--memory", "5XB", "--timeout", "-5", "--", "true")
    assert proc.returncode == 2
    for field in ("cpus", "memory", "timeout"):
        assert f"{field}:" in proc.stderr, proc.stderr


def test_every_typo_in_a_yaml_file_is_reported_at_once(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "cwd" / "job.yaml"
    spec.write_text("command: [echo, hi]\ncpuz: 2\nmemroy: 1G\n")
    proc = cli("submit", "-f", str(spec))
    assert proc.returncode == 2
    assert "'cpuz'" in proc.stderr and "'memroy'" in proc.stderr
    assert "did you mean 'cpus'" in proc.stderr and "did you mean 'memory'" in proc.stderr


def test_the_builder_reports_every_bad_value_at_once(home: object) -> None:
    with connect() as client:
        builder = client.job().shell("true").memory("5XB").timeout(-5).cpus(-1)
        with pytest.raises(InvalidSpec) as caught:
            builder.submit()
    message = str(caught.value)
    assert all(f"{field}:" in message for field in ("cpus", "memory", "timeout")), message


def test_a_job_no_machine_could_hold_exits_2(cli: Cli) -> None:
    proc = cli("submit", "--cpus", "1000", "--", "true")
    assert proc.returncode == 2
    assert "cpus: the job needs 1000 CPUs" in proc.stderr


def test_outputs_that_match_nothing_are_a_warning_or_with_outputs_required_a_failure(
    cli: Cli, tmp_path: Path
) -> None:
    ran = cli("run", "-o", "nomatch*.bin", "-o", "made.txt", "--", "sh", "-c", "echo > made.txt")
    assert ran.returncode == 0, ran.stderr
    assert "warning: attempt 1: no file matched output pattern 'nomatch*.bin'" in ran.stderr
    [job] = as_json(cli("jobs", "--json"))
    kinds = [e["kind"] for e in as_json(cli("status", job["id"], "--json"))["events"]]
    assert "outputs_unmatched" in kinds

    spec = tmp_path / "cwd" / "strict.yaml"
    spec.write_text("shell: 'true'\noutputs: ['nomatch*.bin']\noutputs_required: true\n")
    strict = cli("run", "-f", str(spec))
    assert strict.returncode != 0
    assert "output error" in strict.stderr and "no file matched 'nomatch*.bin'" in strict.stderr


def test_status_json_has_every_event_and_logs_of_a_missing_attempt_is_an_error(
    cli: Cli,
) -> None:
    ran = cli("run", "--json", "--", "echo", "hi")
    job_id = json.loads(ran.stdout)["id"]
    events = as_json(cli("status", job_id, "--json"))["events"]
    assert [e["kind"] for e in events][:2] == ["submitted", "scheduled"]
    assert events[-1]["kind"] == "completed"
    missing = cli("logs", job_id, "--attempt", "9")
    assert missing.returncode == 2
    assert "job " + job_id + " has 1 attempt" in missing.stderr


def test_a_server_refuses_an_environment_too_large_to_exec(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    big = {"shell": "true", "env": {"BIG": "x" * 200_000}}
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=big, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "env.BIG"
    many = {"command": ["echo", *(["y" * 100_000] * 12)]}
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=many, headers=headers)
    assert answer.status_code == 422 and answer.json()["field"] == "command"


def test_python_is_on_a_remote_agents_path(cluster: Cluster, tmp_path: Path) -> None:
    """The seed's first example, `python train.py`, on a server's agent: `python` is the
    agent's Python in the sandbox's view (Debian has only `python3`)."""
    cluster.start_agent("a")
    (tmp_path / "train.py").write_text("import sys; print('trained on', sys.version_info[0])")
    ran = subprocess.run(
        [SANDRUN, "run", "--", "python", "train.py"],
        capture_output=True,
        text=True,
        env=_remote_env(cluster),
        cwd=tmp_path,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "trained on 3\n"


def test_a_server_whose_port_is_taken_says_so_and_by_whom(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("server", "--port", str(port), "--no-auth", timeout=30)
    assert proc.returncode == 2
    assert f"port {port} is in use (by pid {os.getpid()})" in proc.stderr
    assert "use another --port" in proc.stderr
    assert "sandrun server on" not in proc.stderr  # it never listened


def test_token_create_says_which_database_holds_the_token(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    proc = cli("token", "create", "--name", "ci", "--role", "agent", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) > 20  # the secret, alone on stdout
    assert f"agent token for 'ci' stored in {db}" in proc.stderr


def test_doctor_says_what_this_machine_enforces(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDRUN_DB", raising=False)
    monkeypatch.delenv("SANDRUN_URL", raising=False)
    proc = cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert {"sandbox", "cgroups", "seccomp", "gpus", "disk"} <= set(checks)
    # This machine kind has bubblewrap (scripts/test installs it) and runs the tests as root.
    assert checks["sandbox"]["ok"] and checks["sandbox"]["found"].startswith("bwrap")
    assert proc.returncode == (0 if all(c["ok"] for c in checks.values()) else 1)
    plain = cli("doctor")
    assert "sandbox" in plain.stdout and "gpus" in plain.stdout


def test_doctor_says_an_unreachable_database_needs_fixing(cli: Cli) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    proc = cli("doctor", "--db", unreachable)
    assert proc.returncode == 1
    assert "fix" in proc.stdout and "database" in proc.stdout and "127.0.0.1:1" in proc.stdout


def test_a_dev_server_runs_a_job_with_the_lines_it_prints(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "SANDRUN_HOME": str(tmp_path / "home")}
    env.pop("SANDRUN_URL", None)
    env.pop("SANDRUN_DB", None)
    server = subprocess.Popen(
        [SANDRUN, "server", "--dev", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert server.stderr is not None
        exports = ""
        while "export SANDRUN_URL" not in exports:
            line = server.stderr.readline()
            assert line, "the dev server ended before printing its tokens"
            exports = line if "export" in line else exports
        pairs = dict(p.split("=", 1) for p in exports.split()[1:])
        user_env = {**env, **pairs}
        ran = subprocess.run(
            [SANDRUN, "run", "--", "echo", "hello"],
            capture_output=True,
            text=True,
            env=user_env,
            cwd=tmp_path,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "hello\n"
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    agents = [p for p in _processes() if "dev-agent" in " ".join(p)]
    assert agents == []  # the agent went with the server


def test_a_dev_server_refuses_to_print_tokens_beyond_loopback(cli: Cli) -> None:
    proc = cli("server", "--dev", "--host", "0.0.0.0", timeout=30)
    assert proc.returncode == 2
    assert "--dev serves loopback only" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes() -> list[list[str]]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"]:
            found.append(list(proc.info["cmdline"]))
    return found


def test_cli_basics_version_completion_and_table_headers(cli: Cli) -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("sandrun ")
    assert "--install-completion" in cli("--help").stdout
    ran = cli("run", "-o", "out.txt", "--", "sh", "-c", "echo hi > out.txt")
    assert ran.returncode == 0, ran.stderr
    [job] = as_json(cli("jobs", "--json"))
    listing = cli("outputs", job["id"]).stdout.splitlines()
    assert listing[0].split() == ["SIZE", "SHA256", "PATH"] and listing[1].endswith("out.txt")
    run_help, agent_help = cli("run", "--help").stdout, cli("agent", "--help").stdout
    assert "KEY=VALUE" in run_help and "--env" in run_help
    assert run_help.count("<list[str]>") == 1  # the command's own arguments, typer's label
    assert run_help.count("<bool>") == 1  # --help's own; our flags show no type
    assert "--no-allow-local-repos" not in agent_help and "SECONDS" in agent_help


def test_nodes_fits_80_columns_and_says_more_with_wide(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("gpu-box-01", extra=("--gpus", "2xa100-80gb", "--label", "zone=east"))
    wait_for(lambda: len(cluster.nodes()) == 1, timeout=30, what="the agent to register")
    env = {**_remote_env(cluster), "SANDRUN_TOKEN": cluster.tokens["admin"]}

    def nodes(*flags: str) -> str:
        return subprocess.run(
            [SANDRUN, "nodes", *flags], capture_output=True, text=True, env=env, timeout=60
        ).stdout

    narrow = nodes()
    assert "gpu-box-01" in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    assert "zone=east" not in narrow and "zone=east" in nodes("--wide")
    [node] = cluster.nodes()
    assert node.operator == "agents"  # the agent token (its name) that registered it
    assert "agents" in nodes("--wide")


def test_on_a_terminal_the_reason_a_job_waits_is_a_spinner_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("small", cpus=1)
    wait_for(lambda: len(cluster.nodes()) == 1, timeout=30, what="the agent to register")
    leader, follower = pty.openpty()  # stderr a terminal, as a user's would be
    proc = subprocess.Popen(
        [SANDRUN, "run", "--gpus", "8xh100", "--", "echo", "hi"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**_remote_env(cluster), "TERM": "xterm", "COLUMNS": "200"},
        cwd=tmp_path,
    )
    os.close(follower)
    seen = b""
    try:
        while b"fits no registered node" not in seen:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, f"no pending reason on the terminal: {seen!r}"
            seen += os.read(leader, 4096)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        os.close(leader)
    assert b"\x1b[" in seen  # drawn as a live line (the spinner), not printed once per poll
    assert proc.returncode == 130
