"""The freezer's fallback where an attempt has no cgroup freezer (a laptop without root):
SIGSTOP to the attempt's process tree, SIGCONT to thaw it."""

from __future__ import annotations

import subprocess

import psutil

from sandrun.agent.freezer import FreezeNews, Freezer, said
from sandrun.models import AttemptKey
from tests.helpers import wait_for


def _states(root: psutil.Process) -> set[str]:
    return {p.status() for p in [root, *root.children(recursive=True)]}


def test_without_a_cgroup_the_whole_tree_is_stopped_and_continued() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "sh -c 'while :; do :; done' & while :; do :; done"],
        start_new_session=True,
    )
    try:
        root = psutil.Process(proc.pid)
        wait_for(lambda: len(root.children()) == 1, what="its child")
        freezer = Freezer(proc.pid, None)
        assert freezer.how == "SIGSTOP"
        assert freezer.set(True) and freezer.frozen and freezer.since is not None
        assert not freezer.set(True)  # frozen already: nothing done
        wait_for(lambda: _states(root) == {psutil.STATUS_STOPPED}, what="both to stop")
        assert freezer.set(False) and not freezer.frozen and freezer.since is None
        wait_for(lambda: psutil.STATUS_STOPPED not in _states(root), what="both to go on")
    finally:
        proc.kill()
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait()


def test_what_a_failed_heartbeat_could_not_say_is_said_by_the_next() -> None:
    news = FreezeNews()
    news.tell("frozen")
    taken = news.take()
    news.tell("thawed")
    news.untake(taken)  # that heartbeat failed
    told = {("j1", 1): news.take(), ("j2", 3): []}
    assert said(told) == (
        [AttemptKey(job_id="j1", attempt=1)],
        [AttemptKey(job_id="j1", attempt=1)],
    )
    assert news.take() == []
