"""Warm function workers: calls run in a fork server kept in its sandbox between calls.

Each test checks what a user (or an attacker with a function of their own) would see: a
call's fresh process and state, nothing left by the call before it, a worker that is
replaced when a call leaves something running, never a worker shared between owners, and
limits, cancel and a dying worker handled as for a cold job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandrun.client import App, Client
from sandrun.client.local import EmbeddedTransport
from sandrun.errors import JobFailedError
from sandrun.home import Home
from sandrun.states import FailureReason, JobState
from tests.helpers import local_agent, processes_with, wait_for
from tests.integration import warmfuncs
from tests.integration.cluster import SANDRUN, Cluster

MARK = f"warm{os.getpid() % 100000}"


@dataclass
class Pool:
    mode: str
    alice: Client
    bob: Client | None
    runs: Path  # the agent's runs directory, where its workers' homes are
    cli: dict[str, str]  # the environment `sandrun` needs to act as alice


@pytest.fixture(scope="module", params=["server", "embedded"])
def pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pool]:
    """A server with one bubblewrap agent (root: calls run as a worker's own uid), or an
    embedded home with its agent on a thread here."""
    root = tmp_path_factory.mktemp(f"warm-{request.param}")
    if request.param == "embedded":
        home = Home(root / "home")
        with local_agent(home), Client(EmbeddedTransport(home)) as client:
            cli = {**os.environ, "SANDRUN_HOME": str(home.root)}
            yield Pool("embedded", client, None, home.root / "runs", cli)
        return
    cluster = Cluster(root, db=str(root / "server.db"))
    cluster.make_tokens()
    cluster.start_server()
    cluster.start_agent("warm", cpus=2, extra=("--sandbox", "bwrap"))
    alice, bob = cluster.client("alice"), cluster.client("bob")
    cli = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}
    yield Pool("server", alice, bob, root / "agent-warm" / "runs", cli)
    alice.close()
    bob.close()
    cluster.stop()


def _fn(client: Client, fn: object, **resources: object) -> object:
    return App("warm", client).function(**resources)(fn)  # type: ignore[arg-type, call-overload]


def test_each_call_is_a_fresh_child_of_one_warm_worker(pool: Pool) -> None:
    where = _fn(pool.alice, warmfuncs.where, cpus=2)  # one at a time: one worker
    first, second = where.remote(), where.remote()  # type: ignore[attr-defined]
    assert str(first["worker"]).startswith("warm-")
    assert first["worker"] == second["worker"]  # the same sandbox...
    assert first["pid"] != second["pid"]  # ...a new process for each call
    assert first["calls"] == second["calls"] == 1  # no state from the call before
    assert first["random"] != second["random"]  # reseeded after each fork


def test_a_call_finds_nothing_the_call_before_it_left(pool: Pool) -> None:
    litter = _fn(pool.alice, warmfuncs.litter, cpus=2)
    look = _fn(pool.alice, warmfuncs.look, cpus=2)
    worker = litter.remote(MARK)  # type: ignore[attr-defined]
    seen = look.remote(MARK)  # type: ignore[attr-defined]
    assert seen["worker"] == worker  # the same warm sandbox
    assert seen["found"] == []  # /tmp, /dev/shm, the scratch and the home beside it: empty


def test_a_call_that_leaves_a_process_running_gets_its_worker_replaced(pool: Pool) -> None:
    leave = _fn(pool.alice, warmfuncs.leave_daemon, cpus=2)
    where = _fn(pool.alice, warmfuncs.where, cpus=2)
    mark = f"{MARK}-daemon-{pool.mode}"
    worker = leave.remote(mark)  # type: ignore[attr-defined]
    wait_for(lambda: not processes_with(mark), timeout=30, what="the daemon to be killed")
    assert not (pool.runs / worker).exists()  # that worker is gone...
    assert where.remote()["worker"] != worker  # type: ignore[attr-defined]  # ...a fresh one serves


@pytest.mark.parametrize("pool", ["server"], indirect=True)  # embedded: one owner
def test_another_owners_call_never_lands_in_a_worker(pool: Pool) -> None:
    assert pool.bob is not None
    mine = _fn(pool.alice, warmfuncs.where, cpus=2).remote()  # type: ignore[attr-defined]
    theirs = _fn(pool.bob, warmfuncs.where, cpus=2).remote()  # type: ignore[attr-defined]
    again = _fn(pool.alice, warmfuncs.where, cpus=2).remote()  # type: ignore[attr-defined]
    assert theirs["worker"] != mine["worker"]
    assert again["worker"] == mine["worker"]  # alice's stayed warm for her


def test_a_warm_call_streams_its_logs(pool: Pool) -> None:
    say = _fn(pool.alice, warmfuncs.say, cpus=2)
    call = say.spawn("hello")  # type: ignore[attr-defined]
    assert call.get(60) == "hello"
    assert "hello" in call.job.log_text("stdout")
    assert "err:hello" in call.job.log_text("stderr")


def test_a_warm_call_past_its_timeout_is_stopped_and_the_next_one_runs(pool: Pool) -> None:
    sleep = _fn(pool.alice, warmfuncs.sleep, cpus=2, timeout=1)
    with pytest.raises(JobFailedError) as raised:
        sleep.remote(60)  # type: ignore[attr-defined]
    assert pool.alice.get(raised.value.job_id).record.failure_reason is FailureReason.TIMEOUT
    assert _fn(pool.alice, warmfuncs.say, cpus=2).remote("after") == "after"  # type: ignore[attr-defined]


def test_a_cancelled_warm_call_ends_cancelled(pool: Pool) -> None:
    sleep = _fn(pool.alice, warmfuncs.sleep, cpus=2)
    call = sleep.spawn(60)  # type: ignore[attr-defined]
    wait_for(lambda: "sleeping" in call.job.log_text("stdout"), timeout=30, what="the call")
    call.job.cancel()
    assert call.job.wait(30).record.state is JobState.CANCELLED


def test_a_call_whose_worker_dies_is_retried_on_a_fresh_one(pool: Pool) -> None:
    sleep = _fn(pool.alice, warmfuncs.sleep, cpus=2)
    call = sleep.spawn(5)  # type: ignore[attr-defined]
    wait_for(lambda: "sleeping" in call.job.log_text("stdout"), timeout=30, what="the call")
    servers = [
        p
        for p in psutil.process_iter(["cmdline", "cwd"])
        if "sandrun.agent.workers.forkserver" in " ".join(p.info["cmdline"] or [])
        and (p.info["cwd"] or "").startswith(str(pool.runs))
    ]
    assert servers, "the worker's server is running"
    for server in servers:
        with contextlib.suppress(psutil.NoSuchProcess):  # another worker retiring meanwhile
            server.send_signal(signal.SIGKILL)
    assert call.get(60) == "woke"
    attempts = call.job.refresh().attempts
    assert [a.failure_reason for a in attempts[:-1]] == [FailureReason.INTERNAL]


def test_a_shell_job_runs_warm_too_and_finds_nothing_the_job_before_left(pool: Pool) -> None:
    upload = {"upload_code": False, "cpus": 2}
    first = pool.alice.run(
        "touch /tmp/left-by-first ../beside-first; basename $(dirname $PWD)", **upload
    ).wait(60)
    second = pool.alice.run(
        "ls /tmp/left-by-first ../beside-first 2>&1; basename $(dirname $PWD)", **upload
    ).wait(60)
    worker = first.log_text("stdout").strip()
    assert worker.startswith("warm-")
    seen = second.log_text("stdout")
    assert seen.splitlines()[-1] == worker  # the same warm sandbox...
    assert seen.count("No such file") == 2  # ...and neither file is there


def test_a_warm_calls_output_arrives_while_it_runs(pool: Pool) -> None:
    chatter = _fn(pool.alice, warmfuncs.chatter, cpus=2)
    call = chatter.spawn(60)  # type: ignore[attr-defined]
    wait_for(lambda: "early" in call.job.log_text("stdout"), timeout=30, what="its output")
    call.job.cancel()


def test_a_call_setting_pythons_startup_variables_gets_a_fresh_interpreter(pool: Pool) -> None:
    seeded = _fn(pool.alice, warmfuncs.hash_randomization, cpus=2, env={"PYTHONHASHSEED": "0"})
    assert seeded.remote() == 0  # type: ignore[attr-defined]
    plain = _fn(pool.alice, warmfuncs.hash_randomization, cpus=2)
    assert plain.remote() == 1  # type: ignore[attr-defined]


def _cls(client: Client, cls: type, **resources: object) -> Any:
    return App("warm", client).cls(**resources)(cls)  # type: ignore[arg-type]


def test_a_class_enters_once_per_worker_and_each_call_forks_the_entered_instance(
    pool: Pool,
) -> None:
    model = _cls(pool.alice, warmfuncs.Model, cpus=2)(3)
    first, second = model.predict.spawn(2), model.predict.spawn(5)
    one, two = first.get(timeout=60), second.get(timeout=60)
    assert (one["y"], two["y"]) == (6, 15)
    assert str(one["worker"]).startswith("warm-") and one["worker"] == two["worker"]
    assert one["loaded_by"] == two["loaded_by"]  # one instance, entered once...
    assert one["entered"] == two["entered"] == 1
    assert len({one["pid"], two["pid"], one["loaded_by"]}) == 3  # ...forked for each call
    assert one["calls"] == two["calls"] == 1  # what a call changed, the next does not see
    assert "loading scale 3" in first.job.log_text("stdout")  # @enter's output: its log
    assert "loading" not in second.job.log_text("stdout")


def test_a_different_instance_or_owner_never_gets_an_entered_worker(pool: Pool) -> None:
    """Attack: constructor arguments (or an owner) of one's own must not reach an instance
    another set of arguments (or owner) entered."""
    three = _cls(pool.alice, warmfuncs.Model, cpus=2)(3).predict.remote(1)
    four = _cls(pool.alice, warmfuncs.Model, cpus=2)(4).predict.remote(1)
    assert (three["y"], four["y"]) == (3, 4)
    assert three["worker"] != four["worker"]
    if pool.bob is not None:
        bobs = _cls(pool.bob, warmfuncs.Model, cpus=2)(3).predict.remote(1)
        assert bobs["worker"] not in (three["worker"], four["worker"])


def test_a_failing_enter_fails_each_call_with_its_error(pool: Pool) -> None:
    broken = _cls(pool.alice, warmfuncs.Broken, cpus=2)()
    for _ in range(2):  # its worker retired after the first: the second enters again
        with pytest.raises(RuntimeError, match="no weights here") as raised:
            broken.predict.remote()
        assert any("in load" in note for note in raised.value.__notes__)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_call_stopped_in_its_enter_ends_and_takes_the_worker_with_it(
    pool: Pool, how: str
) -> None:
    mark = f"{MARK}-enter-{how}"
    slow = _cls(pool.alice, warmfuncs.Slow, cpus=2, timeout=2 if how == "timeout" else None)
    call = slow(mark).predict.spawn()
    wait_for(lambda: processes_with(mark), timeout=30, what="the call's @enter")
    if how == "cancel":
        call.job.cancel()
    ended = call.job.wait(timeout=30).record
    reason = FailureReason.CANCELLED if how == "cancel" else FailureReason.TIMEOUT
    state = JobState.CANCELLED if how == "cancel" else JobState.FAILED
    assert (ended.state, ended.failure_reason) == (state, reason)
    if how == "timeout":  # (a cancel ends a job not yet started at once, on the server)
        assert "stopped in its @enter" in (ended.message or "")
    wait_for(lambda: not processes_with(mark), timeout=30, what="the worker to be gone")


def _warm_groups(client: Client) -> list[Any]:
    return [g for n in client.nodes() if n.warm is not None for g in n.warm.groups]


def test_min_workers_are_started_ahead_and_shown_to_their_owner_only(pool: Pool) -> None:
    """`sandrun nodes --json` shows a node's warm workers; another tenant sees none of
    yours (attack: which functions you run is yours to know)."""
    keep = _fn(pool.alice, warmfuncs.where, memory="300M", min_workers=2, idle_timeout=30)
    keep.remote()  # type: ignore[attr-defined]

    def kept() -> Any:
        found = [g for g in _warm_groups(pool.alice) if g.min_workers]  # (one key: 300M)
        return found if found and found[0].workers == 2 else None

    [group] = wait_for(kept, timeout=30, what="a second worker started ahead")
    owner = "alice" if pool.mode == "server" else "local"
    assert (group.owner, group.min_workers, group.idle_timeout) == (owner, 2, 30)
    if pool.bob is not None:
        assert all(g.owner == "bob" for g in _warm_groups(pool.bob))
    listed = subprocess.run(
        [SANDRUN, "nodes", "--json"], capture_output=True, text=True, env=pool.cli, check=True
    )
    groups = [g for n in json.loads(listed.stdout) for g in (n["warm"] or {}).get("groups", [])]
    [shown] = [g for g in groups if g["min_workers"]]
    assert (shown["workers"], shown["min_workers"]) == (2, 2)
    # Both serve calls: the one started ahead did not die with whatever started it.
    calls = [keep.spawn() for _ in range(2)]  # type: ignore[attr-defined]
    assert all(str(c.get(timeout=60)["worker"]).startswith("warm-") for c in calls)


def test_a_warm_workers_jobs_reuse_its_cgroup_each_measured_and_limited_alone(
    pool: Pool,
) -> None:
    hog = _fn(pool.alice, warmfuncs.hog, memory="300M", cpus=2)
    big = hog.spawn(150)  # type: ignore[attr-defined]
    first = big.get(timeout=60)
    oom = hog.spawn(400)  # type: ignore[attr-defined]
    with pytest.raises(JobFailedError):
        oom.get(timeout=60)
    raising = hog.spawn(-1)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):  # its own failure, not the OOM before it
        raising.get(timeout=60)
    small = hog.spawn(5)  # type: ignore[attr-defined]
    last = small.get(timeout=60)
    assert first["worker"] == last["worker"] and first["cgroup"] == last["cgroup"]
    assert ".job" in str(first["cgroup"])  # the worker's cgroup for its jobs, kept
    (peak_big,) = [a.usage.max_rss_mb for a in big.job.attempts if a.usage]
    (peak_small,) = [a.usage.max_rss_mb for a in small.job.attempts if a.usage]
    assert peak_big is not None and peak_big > 150
    assert peak_small is not None and peak_small < 100  # measured from its own start
    assert oom.job.refresh().record.failure_reason is FailureReason.OOM
    assert raising.job.refresh().record.failure_reason is FailureReason.EXIT_CODE
    assert small.job.refresh().record.failure_reason is None
