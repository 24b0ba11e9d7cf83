"""The hostile-job suite: other people's code stays in its box, on every sandbox backend.

Each test runs a job that tries something a job must not do (or uses more than it may)
on a real server with a real remote agent, and checks what a user would see: the job's
state, its failure reason, its logs, and that the host and the other jobs are untouched.
Tests of namespaces run on each isolating backend available here; tests of limits also
run with `--sandbox none`, which still has cgroups and rlimits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandrun.agent.local import LocalAgent
from sandrun.agent.process import InfoPipe, sandbox_failed
from sandrun.agent.sandbox import FsView, probe
from sandrun.agent.sandbox.base import SYSTEM_PATH
from sandrun.agent.sandbox.bwrap import BwrapSandbox
from sandrun.agent.sandbox.unshare import UnshareSandbox
from sandrun.client import Client, connect
from sandrun.home import Home
from sandrun.states import FailureReason, JobState
from tests.conftest import no_service, pid_gone
from tests.helpers import processes_with, wait_for
from tests.integration.cluster import SANDRUN, Cluster

# A Python a job's own uid can run: the system's where there is one. The agent's may sit
# below a directory only root may enter (pyenv's, in /root), which a job's uid cannot
# reach without a sandbox's view to show it.
PY = shutil.which("python3", path=SYSTEM_PATH) or sys.executable
# Host processes are found by command line; this run's own mark keeps a concurrent run of
# the suite on the same machine from being mistaken for ours.
MARK = f"{os.getpid() % 100000}"


def _available(name: str) -> bool:
    backend = {"bwrap": BwrapSandbox, "unshare": UnshareSandbox}[name](FsView())
    return probe(backend) is None


ISOLATING = ["bwrap", "unshare"]
# Namespace tests run on the isolating backends; limit tests on `none` too. Jobs run in warm
# workers by default (not on a root agent without a sandbox); "bwrap-cold" starts a
# sandbox per job (`--warm-idle 0`).
AGENTS = ["bwrap", "bwrap-cold", "unshare"]
isolating = pytest.mark.parametrize("agent", AGENTS, indirect=True)
every_backend = pytest.mark.parametrize("agent", [*AGENTS, "none"], indirect=True)


@dataclass
class Boxed(Cluster):
    kind: str = "none"  # the agent's sandbox backend
    warm: bool = True  # whether its jobs run in warm workers


def _require(kind: str) -> None:
    if kind != "none" and not _available(kind):
        no_service(f"the {kind} sandbox does not work on this machine")


@pytest.fixture(scope="module")
def agent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Boxed]:
    """A server and one agent with the backend under test (module-wide: jobs are cheap)."""
    kind = request.param.removesuffix("-cold")
    _require(kind)
    root = tmp_path_factory.mktemp(f"sandbox-{request.param}")
    # A root agent without a sandbox keeps no warm workers.
    cold = request.param.endswith("-cold") or (kind == "none" and os.geteuid() == 0)
    c = Boxed(root, db=str(root / "server.db"), kind=kind, warm=not cold)
    c.make_tokens()
    c.start_server()
    # The operator's defaults for what a spec leaves open, small enough to reach.
    defaults = ("--job-memory", "256M", "--job-disk", "64M", "--keep-failed", "3")
    warm = ("--warm-idle", "0") if request.param.endswith("-cold") else ()
    c.start_agent("box", cpus=64, extra=("--sandbox", kind, *defaults, *warm))
    yield c
    c.stop()


@pytest.fixture
def client(agent: Boxed) -> Iterator[Client]:
    with agent.client() as c:
        yield c


# --- what a job must not see or touch ----------------------------------------------------


@isolating
def test_the_agents_state_and_token_stay_out_of_reach(agent: Boxed, client: Client) -> None:
    secret = agent.root / "agent-box" / "token"
    secret.write_text("s3cret-token")
    root = agent.root
    script = (
        f"cat {secret}; ls {root}/agent-box/runs; cat {root}/server.db | head -c 64; "
        "env; cat /proc/1/environ; ls /proc"
    )
    job = client.run(script).wait(60)
    logs = job.log_text()
    assert "s3cret-token" not in logs
    assert agent.tokens["agents"] not in logs  # not in the job's env, nor readable via /proc
    assert "SQLite format" not in logs
    denied = [line for line in logs.splitlines() if line.startswith(f"cat: {secret}")]
    assert denied and ("No such file" in denied[0] or "Permission denied" in denied[0])


@isolating
def test_writes_outside_the_workdir_fail(agent: Boxed, client: Client) -> None:
    escape = agent.root / "escaped"
    job = client.run(
        f"touch {escape} || echo denied-1; touch /usr/escaped || echo denied-2; "
        "touch /etc/escaped || echo denied-3; echo ok > inside && cat inside; echo uid=$(id -u)"
    ).wait(60)
    logs = job.log_text("stdout")
    if os.geteuid() == 0:  # a root agent runs jobs as an unprivileged uid of their own
        assert "uid=0" not in logs and "uid=2000000" in logs
    assert job.record.state is JobState.COMPLETED
    assert "denied-1" in logs and "denied-2" in logs and "denied-3" in logs
    assert "ok" in logs
    assert not escape.exists() and not Path("/usr/escaped").exists()


@isolating
def test_a_job_sees_and_signals_no_other_jobs_processes(agent: Boxed, client: Client) -> None:
    victim = client.run(f"{PY} -c 'import time; time.sleep(120)'")
    wait_for(lambda: victim.refresh().is_running, timeout=30, what="the victim to run")
    attacker = client.run(
        "ps -eo pid,comm | tail -n +2; kill -9 -1; "
        "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done"
    ).wait(60)
    logs = attacker.log_text("stdout")
    assert "time.sleep(120)" not in logs
    assert "--server" not in logs and "server.db" not in logs  # neither agent nor server
    assert victim.refresh().is_running
    victim.cancel()
    assert victim.wait(30).record.state is JobState.CANCELLED


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on the host's loopback that greets each connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello from the host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    server.close()


@isolating
def test_the_network_is_off_unless_asked_for(
    agent: Boxed, client: Client, host_server: int
) -> None:
    probe_host = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {host_server}), timeout=5)\n"
        "print(s.recv(100).decode().strip())\n"
    )
    local_loopback = (
        "import socket\n"
        "srv = socket.create_server(('127.0.0.1', 0)); "
        "c = socket.create_connection(srv.getsockname()); print('own loopback works')\n"
    )
    off = client.run([PY, "-c", probe_host]).wait(60)
    own = client.run([PY, "-c", local_loopback]).wait(60)
    on = client.run([PY, "-c", probe_host], network=True).wait(60)
    assert off.record.state is JobState.FAILED
    assert "hello from the host" not in off.log_text()
    assert own.record.state is JobState.COMPLETED and "own loopback works" in own.log_text()
    assert on.record.state is JobState.COMPLETED
    assert "hello from the host" in on.log_text("stdout")


@isolating
def test_a_sandboxed_job_dies_with_its_agent(agent: Boxed, client: Client) -> None:
    doomed = agent.start_agent("doomed", cpus=128, extra=("--sandbox", agent.kind))
    job = client.run(f"echo parked >&2; exec sleep 300.{MARK}", cpus=100)  # fits only there
    wait_for(lambda: "parked" in job.log_text(), timeout=30, what="the job to start")
    leader = job.attempts[0].pid
    assert leader is not None
    doomed.kill()
    doomed.wait(10)
    # A dying process drops its command line before it is a zombie: wait for both.
    wait_for(
        lambda: not processes_with(f"sleep 300.{MARK}") and pid_gone(leader),
        timeout=10,
        what="the job to die",
    )


# --- limits: enforced and reported, with or without namespaces ---------------------------


FORK_BOMB = """
import os, time
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"fork failed after {children} children: {exc}", flush=True)
        raise SystemExit(1)
    if pid == 0:
        time.sleep(300.@MARK@)
        os._exit(0)
    children += 1
""".replace("@MARK@", MARK)


@every_backend
def test_a_fork_bomb_is_contained_and_reported(agent: Boxed, client: Client) -> None:
    bomb = client.run([PY, "-c", FORK_BOMB], limits={"processes": 50}).wait(120)
    assert bomb.record.state is JobState.FAILED
    assert bomb.record.failure_reason is FailureReason.PROCESS_LIMIT
    assert "fork failed" in bomb.log_text()
    # The agent lives on and runs the next job.
    assert client.run("echo still here").wait(60).log_text() == "still here\n"
    assert agent.agents["box"].poll() is None
    gone = f"time.sleep(300.{MARK})"
    wait_for(lambda: not processes_with(gone), timeout=30, what="the bomb gone")


@every_backend
def test_a_shell_fork_bomb_ends_at_its_timeout_and_says_it_hit_the_limit(
    agent: Boxed, client: Client
) -> None:
    job = client.run(
        ["/bin/sh", "-c", "b() { b | b & }; b; sleep 60"],
        limits={"processes": 40},
        timeout=2,
    ).wait(120)
    assert job.record.failure_reason is FailureReason.TIMEOUT
    assert "limit of 40 processes" in (job.record.message or "")


@every_backend
def test_allocating_past_the_memory_limit_is_oom(agent: Boxed, client: Client) -> None:
    hog = "x = bytearray(400 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\nprint('survived')"
    job = client.run([PY, "-c", hog], memory="64MB").wait(120)
    assert job.record.state is JobState.FAILED
    assert job.record.failure_reason is FailureReason.OOM
    assert "survived" not in job.log_text()


@every_backend
def test_a_job_that_names_no_memory_gets_the_nodes_default(agent: Boxed, client: Client) -> None:
    hog = "x = bytearray(400 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\nprint('survived')"
    job = client.run([PY, "-c", hog]).wait(120)
    assert job.record.failure_reason is FailureReason.OOM
    assert "memory limit of 256 MiB (this node's default" in (job.record.message or "")
    assert "survived" not in job.log_text()


@isolating
def test_tmp_and_shm_hold_at_most_the_memory_limit(agent: Boxed, client: Client) -> None:
    job = client.run(
        "df --output=size -B1M /tmp /dev/shm | tail -n 2; "
        "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1; echo dd=$?",
        memory="64MB",
    ).wait(120)
    sizes = job.log_text("stdout").split()[:2]
    assert sizes == ["64", "64"], job.log_text()
    # Filling /tmp ends in no space, or (its pages are charged to the job) out of memory.
    assert job.record.failure_reason is FailureReason.OOM or (
        "No space left on device" in job.log_text() and "dd=1" in job.log_text()
    )


@every_backend
def test_filling_the_scratch_stops_at_the_disk_limit(agent: Boxed, client: Client) -> None:
    writer = client.run(  # many small files: the agent's measurement catches it
        "i=0; while [ $i -lt 200 ]; do i=$((i+1)); head -c 1048576 /dev/zero > f$i; "
        "sleep 0.02; done; echo wrote-all",
        limits={"disk": 16},
        timeout=120,
    )
    # One file past the node's cap (64 MiB) whatever the spec asks: the file size rlimit.
    big = client.run("dd if=/dev/zero of=big bs=1M count=100", limits={"disk": 4096})
    writer.wait(120)
    assert writer.record.failure_reason is FailureReason.DISK_LIMIT
    assert "filled its scratch directory past its disk limit of 16 MiB" in (
        writer.record.message or ""
    )
    assert "wrote-all" not in writer.log_text()
    big.wait(60)
    assert big.record.failure_reason is FailureReason.DISK_LIMIT
    assert "wrote a file past its disk limit of 64 MiB" in (big.record.message or "")


@isolating
def test_writing_beside_the_scratch_counts_against_the_disk_limit(
    agent: Boxed, client: Client
) -> None:
    """In a warm worker the scratch's parent (the worker's home) is writable too: what a
    job writes there is measured as its own."""
    writer = client.run(
        "i=0; while [ $i -lt 200 ]; do i=$((i+1)); head -c 1048576 /dev/zero > ../f$i; "
        "sleep 0.02; done; echo wrote-all",
        limits={"disk": 16},
        timeout=120,
    ).wait(120)
    if agent.warm:
        assert writer.record.failure_reason is FailureReason.DISK_LIMIT
        assert "wrote-all" not in writer.log_text()
    else:  # a sandbox of its own: nothing beside its scratch is writable (a root agent)
        assert writer.log_text("stderr").count("Permission denied") == 200


@every_backend
def test_an_attempts_directory_goes_when_it_ends_a_failed_one_after_a_while(
    agent: Boxed, client: Client
) -> None:
    runs = agent.root / "agent-box" / "runs"
    done = client.run("head -c 5000000 /dev/zero > big; mkdir -p d && chmod 0 d").wait(60)
    failed = client.run("head -c 5000000 /dev/zero > big; exit 3").wait(60)
    assert done.record.state is JobState.COMPLETED
    assert not (runs / f"{done.id}.1").exists()  # gone before the result was reported
    assert failed.record.failure_reason is FailureReason.EXIT_CODE
    kept = runs / f"{failed.id}.1"
    assert (kept / "big").stat().st_size == 5_000_000  # kept, to look into
    wait_for(lambda: not kept.exists(), timeout=30, what="the failed attempt's directory to go")


@every_backend
def test_links_a_job_leaves_in_its_scratch_lead_its_removal_nowhere(
    agent: Boxed, client: Client, tmp_path: Path
) -> None:
    """A hostile job plants links to the host and unreadable directories, then fails so
    its scratch is kept: removing it later touches nothing but the scratch."""
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "keep").write_text("mine")
    outside.chmod(0o750)
    failed = client.run(
        f"ln -s {outside} dir; ln -s {outside}/keep file; ln -s / root; "
        "mkdir -p locked/deeper && chmod 0 locked; exit 3"
    ).wait(60)
    assert failed.record.failure_reason is FailureReason.EXIT_CODE
    kept = agent.root / "agent-box" / "runs" / f"{failed.id}.1"
    wait_for(lambda: not kept.exists(), timeout=30, what="the failed attempt's directory to go")
    assert (outside / "keep").read_text() == "mine" and (outside / "inner").is_dir()
    assert outside.stat().st_mode & 0o777 == 0o750  # not chmod-ed on the way out


@every_backend
def test_a_job_s_environment_steers_none_of_the_agent_s_own_steps(
    agent: Boxed, client: Client, tmp_path: Path
) -> None:
    """The gate, bwrap or unshare, setpriv and nsenter run as root: a job's PATH naming a
    directory of look-alike tools another job of its owner wrote, and its LD_PRELOAD,
    must reach only its own program, on a cold start and in an exec alike."""
    marks = tmp_path / "pwned"
    tools = "bwrap setpriv nsenter sh env chroot unshare python3"
    fake = f'#!/bin/sh\\ntouch {marks}-%s\\nexec /usr/bin/%s "$@"\\n'
    plant = (
        f'mkdir -p "$HOME/bin"; for t in {tools}; do printf \'{fake}\' $t $t > "$HOME/bin/$t"; '
        'chmod 755 "$HOME/bin/$t"; done; chmod 755 "$HOME"; echo "$HOME/bin"; sleep 120'
    )
    planter = client.run(plant)
    wait_for(lambda: planter.log_text().strip() != "", what="the tools to be planted")
    planted = planter.log_text().split()[0]
    bait = {"PATH": f"{planted}:/usr/bin:/bin", "LD_PRELOAD": f"/nonexistent-{MARK}.so"}
    job = client.run("echo ran", env=bait, timeout=60).wait(60)
    assert job.record.state is JobState.COMPLETED, job.log_text()
    # The job's own shell is the one process that tried the library (ld.so says so once).
    assert job.log_text().count("cannot be preloaded") == 1, job.log_text()
    seen = client.run("sleep 60", env=bait)
    wait_for(lambda: seen.refresh().is_running, what="the job to start")
    wait_for(lambda: seen.exec(["/bin/true"]).ok, what="an exec")
    done = seen.exec(["/bin/echo", "exec ran"])
    assert done.stdout == b"exec ran\n" and done.stderr.count(b"cannot be preloaded") == 1
    seen.cancel()
    planter.cancel()
    assert not list(tmp_path.glob("pwned-*")), "a look-alike ran as the agent"


@isolating
def test_a_job_inherits_no_descriptor_but_its_stdio(agent: Boxed, client: Client) -> None:
    """The start gate's pipe and the seccomp program are the sandbox's, not the job's."""
    job = client.run("ls -l /proc/self/fd").wait(60)
    fds = dict(
        (line.split()[-3], line.split()[-1])
        for line in job.log_text("stdout").splitlines()
        if " -> " in line
    )
    extra = {fd: to for fd, to in fds.items() if fd not in ("0", "1", "2")}
    # The only other descriptor is the one ls lists the directory with.
    assert all(re.fullmatch(r"/proc/\d+/fd", to) for to in extra.values()), fds
    assert len(extra) <= 1 and not any("memfd" in to for to in fds.values()), fds


@pytest.mark.parametrize("agent", ["bwrap"], indirect=True)
def test_a_bwrap_job_runs_under_the_seccomp_filter(agent: Boxed, client: Client) -> None:
    keyctl = (
        "import ctypes, os, pyseccomp as s\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "number = s.resolve_syscall(s.Arch.NATIVE, 'keyctl')\n"
        "print('keyctl', libc.syscall(number, 0, 0), os.strerror(ctypes.get_errno()))"
    )
    job = client.run(
        "grep Seccomp: /proc/self/status; unshare --user true 2>&1; echo unshare=$?; "
        f'{sys.executable} -c "{keyctl}"'  # the agent's: it has pyseccomp
    ).wait(60)
    out = job.log_text()
    assert "Seccomp:\t2" in out, out  # a filter is loaded
    assert "unshare=1" in out and "Operation not permitted" in out
    assert "keyctl -1 Operation not permitted" in out
    (node,) = [n for n in agent.nodes() if n.name == "box"]
    assert node.sandbox is not None and node.sandbox.seccomp.startswith("default filter")


@every_backend
def test_endless_output_is_capped_with_a_marker(agent: Boxed, client: Client) -> None:
    capped = client.run("head -c 3000000 /dev/zero | tr '\\0' x", limits={"log_size": 1}).wait(60)
    stopped = client.run("yes", limits={"log_size": 1, "stop_on_log_limit": True}).wait(60)
    assert capped.record.state is JobState.COMPLETED  # capped, not stopped
    out = capped.log_text("stdout")
    assert len(out) == 2**20 and set(out) == {"x"}
    assert "log reached its limit of 1 MiB" in capped.log_text("stderr")
    assert stopped.record.failure_reason is FailureReason.LOG_LIMIT
    assert len(stopped.log_text("stdout")) == 2**20


@every_backend
def test_a_job_ignoring_sigterm_is_killed_at_its_timeout(agent: Boxed, client: Client) -> None:
    job = client.run("trap '' TERM; sleep 60; echo too late", timeout=1).wait(60)
    assert job.record.state is JobState.FAILED
    assert job.record.failure_reason is FailureReason.TIMEOUT
    assert "too late" not in job.log_text()


@every_backend
def test_a_daemon_that_double_forks_dies_with_its_job(agent: Boxed, client: Client) -> None:
    marker = f"3141.{MARK}"
    job = client.run(
        f"(setsid sh -c 'exec sleep {marker}' </dev/null >/dev/null 2>&1 &) ; echo spawned"
    ).wait(60)
    assert job.record.state is JobState.COMPLETED
    wait_for(lambda: not processes_with(f"sleep {marker}"), timeout=30, what="the daemon to die")


@every_backend
def test_a_huge_file_stops_at_the_file_limit(agent: Boxed, client: Client) -> None:
    job = client.run("dd if=/dev/zero of=big bs=1M count=100", limits={"file_size": 10}).wait(60)
    assert job.record.state is JobState.FAILED
    assert job.record.failure_reason is FailureReason.FILE_LIMIT


@every_backend
def test_cpu_time_past_the_limit_is_reported(agent: Boxed, client: Client) -> None:
    job = client.run([PY, "-c", "while True: pass"], limits={"cpu_time": 1}, timeout=60).wait(60)
    assert job.record.failure_reason is FailureReason.CPU_LIMIT


@every_backend
def test_outputs_past_their_limit_are_refused(agent: Boxed, client: Client) -> None:
    job = client.run(
        "head -c 3000000 /dev/zero > big", outputs=["big"], limits={"output_size": 1}
    ).wait(60)
    assert job.record.failure_reason is FailureReason.OUTPUT_LIMIT
    assert "over the limit of 1 MiB" in (job.record.message or "")
    assert job.outputs == []


@every_backend
def test_the_node_reports_what_it_enforces(agent: Boxed) -> None:
    (node,) = [n for n in agent.nodes() if n.name == "box"]
    assert node.sandbox is not None
    assert node.sandbox.backend == agent.kind
    limits = node.sandbox.limits
    assert set(limits) >= {"memory", "processes", "cpu_time", "file_size", "log_size", "disk"}
    assert "256 MiB unless the job asks" in limits["memory"]
    assert "at most 64 MiB" in limits["disk"]
    if agent.kind == "unshare":
        assert node.sandbox.seccomp == "none: not loaded by the unshare sandbox"
    if os.geteuid() == 0:
        assert node.sandbox.job_user == "per-attempt uid"
    env = {**os.environ, "SANDRUN_URL": agent.url, "SANDRUN_TOKEN": agent.tokens["admin"]}
    listed = subprocess.run([SANDRUN, "nodes", "--wide"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["box"])
    assert agent.kind in row
    as_json = subprocess.run([SANDRUN, "nodes", "--json"], capture_output=True, env=env)
    (box,) = [n for n in json.loads(as_json.stdout) if n["name"] == "box"]
    assert box["sandbox"]["seccomp"] == node.sandbox.seccomp


# --- the embedded agent: the user's own code, the `host` view -----------------------------


@pytest.fixture(params=ISOLATING)
def embedded(request: pytest.FixtureRequest, home: Home) -> Iterator[Client]:
    """The real local agent with the backend under test, on a thread of this process."""
    _require(request.param)
    local = LocalAgent(home, idle_exit=None, kill_grace=0.5, sandbox=request.param)
    thread = threading.Thread(target=local.run, daemon=True)
    thread.start()
    with connect(home=home.root) as client:
        yield client
    local.stop()
    thread.join(30)


def test_embedded_jobs_see_the_host_read_only_but_not_sandruns_state(
    embedded: Client, home: Home, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.txt").write_text("the user's data\n")
    outside = tmp_path / "outside.txt"
    job = embedded.run(
        f"cat data.txt; echo result > result.txt; ls {home.root}; "
        f"cat {home.db} | head -c 16; touch /etc/escaped || echo denied; touch {outside}",
        working_dir=str(project),
    ).wait(60)
    logs = job.log_text()
    assert job.record.state is JobState.COMPLETED, logs
    assert "the user's data" in logs and (project / "result.txt").read_text() == "result\n"
    assert "SQLite format" not in logs and "agent.lock" not in logs
    # /etc is read-only; the job's /tmp is its own, so the host's stays untouched.
    assert "denied" in logs and not Path("/etc/escaped").exists() and not outside.exists()


# Each write puts back the value already there: harmless should the mount be writable.
_KERNEL_WRITE = (
    "for f in kernel/printk_ratelimit kernel/core_pattern; do "
    'v=$(cat /proc/sys/$f); printf "%s\\n" "$v" > /proc/sys/$f && echo "wrote $f"; done; '
    "echo > /proc/sysrq-trigger 2>/dev/null && echo wrote-sysrq; echo done"
)


def test_embedded_jobs_cannot_change_kernel_settings(embedded: Client) -> None:
    job = embedded.run(_KERNEL_WRITE).wait(60)
    logs = job.log_text()
    assert "done" in logs and "wrote" not in logs, logs
    assert "Read-only file system" in logs or "Permission denied" in logs


@isolating
def test_remote_jobs_cannot_change_kernel_settings(agent: Boxed, client: Client) -> None:
    logs = client.run(_KERNEL_WRITE, upload_code=False).wait(60).log_text()
    assert "done" in logs and "wrote" not in logs, logs


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent can run jobs as another user")
@pytest.mark.parametrize("kind", ISOLATING)
def test_an_embedded_agent_started_through_sudo_runs_jobs_as_the_user(
    kind: str, home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require(kind)
    monkeypatch.setenv("SUDO_UID", "65534")
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, 65534, 65534)
    local = LocalAgent(home, idle_exit=None, kill_grace=0.5, sandbox=kind)
    thread = threading.Thread(target=local.run, daemon=True)
    thread.start()
    try:
        with connect(home=home.root) as client:
            job = client.run("id -u; touch made-here", working_dir=str(project)).wait(60)
            assert job.log_text("stdout").split() == ["65534"], job.log_text()
            assert (project / "made-here").stat().st_uid == 65534
    finally:
        local.stop()
        thread.join(30)


def test_embedded_jobs_have_no_network_unless_asked(embedded: Client, host_server: int) -> None:
    program = [PY, "-c", f"import socket; socket.create_connection(('127.0.0.1', {host_server}))"]
    assert embedded.run(program).wait(60).record.state is JobState.FAILED
    assert embedded.run(program, network=True).wait(60).record.state is JobState.COMPLETED


def test_an_agent_that_may_not_make_cgroups_falls_back_to_rlimits() -> None:
    """A cgroup parent made by a root agent must not fool an unprivileged one."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the check as another user")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    probe_code = (
        "from sandrun.agent.sandbox import FsView, open_sandboxing\n"
        "print(open_sandboxing('none', FsView(), job_uids=True).report().limits['memory'])"
    )
    system_python = "/usr/bin/python3"
    same = subprocess.run(
        [system_python, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if same != str(sys.version_info[:2]):
        pytest.skip(f"{system_python} is not Python {sys.version_info[:2]}: cannot load ours")
    repo = str(Path(__file__).resolve().parents[2])
    as_nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    done = subprocess.run(
        [*as_nobody, system_python, "-c", probe_code],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{repo}:{site}"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rlimit (address space)"


# --- the executor's start gate, with stand-in sandboxes --------------------------------


def test_a_sandbox_that_ends_before_its_first_process_says_why() -> None:
    with InfoPipe.open(True) as info:
        assert info is not None
        proc = subprocess.Popen(
            ["sh", "-c", "echo 'bwrap: no permission to clone' >&2; exit 1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(info.write_fd,),
        )
        assert info.child_pid() is None  # it closed its end without a word
        result = sandbox_failed(proc)
    assert result.failure_reason is FailureReason.INTERNAL
    assert result.message == "cannot start the sandbox: bwrap: no permission to clone"


def test_a_sandbox_that_says_nothing_in_time_is_given_up_on() -> None:
    with InfoPipe.open(True) as info:
        assert info is not None
        silent = subprocess.Popen(["sleep", "30"], pass_fds=(info.write_fd,))
        try:
            assert info.child_pid(timeout=0.2) is None  # it holds the pipe, says nothing
        finally:
            silent.kill()
            silent.wait()


@pytest.mark.parametrize("agent", ["none"], indirect=True)
def test_an_exec_never_joins_namespaces_a_job_made(agent: Boxed, client: Client) -> None:
    """Without a sandbox a job may make namespaces of its own (a user namespace where it
    is root, a PID namespace); an exec, which starts as root, must not follow it there:
    it runs where the job was started, and the job runs on. (In bwrap the filter refuses
    a job new namespaces, and in the unshare backend its chroot does.)"""
    job = client.run(
        f"exec unshare --user --map-root-user --pid --fork --mount-proc sleep 60.{MARK}"
    )
    wait_for(lambda: _in_a_user_namespace_of_its_own(f"sleep 60.{MARK}"), what="its namespace")
    seen = job.exec(["readlink", "/proc/self/ns/user", "/proc/self/ns/pid"])
    assert seen.ok, seen
    here = [os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "pid")]
    assert seen.stdout.decode().split() == here
    assert job.refresh().is_running
    job.cancel().wait(30)


def _in_a_user_namespace_of_its_own(command: str) -> bool:
    mine = os.stat("/proc/self/ns/user").st_ino
    return any(os.stat(f"/proc/{p.pid}/ns/user").st_ino != mine for p in processes_with(command))
