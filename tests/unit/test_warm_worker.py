"""A warm worker's two ends in isolation: what the agent accepts from a fork server (which
shares its sandbox with its owner's jobs, so may say anything), and how the server empties
/tmp between jobs without touching what the sandbox made there."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.agent.workers import forkserver
from sandrun.agent.workers.pool import instance_of
from sandrun.agent.workers.worker import WarmCall, WarmKey, Worker, said_pid
from sandrun.errors import WorkerDied
from sandrun.runner import ARGS_INPUT, CALL_ENV, SHELL
from sandrun.spec import JobSpec, parse_spec


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Worker, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = Worker(WarmKey("alice", False, None), tmp_path, ours, isolated=True)
    yield worker, theirs
    ours.close()
    theirs.close()


def test_a_well_formed_answer_is_read(pair: tuple[Worker, socket.socket]) -> None:
    worker, server = pair
    server.send(json.dumps({"pid": 7}).encode())
    assert worker.answer(1, said_pid) == 7
    assert worker.reusable


@pytest.mark.parametrize(
    "said",
    [b"not json", b"[1, 2]", b'{"pid": "seven"}', b'{"other": 1}', b'"pid"'],
)
def test_nonsense_from_the_server_retires_the_worker(
    pair: tuple[Worker, socket.socket], said: bytes
) -> None:
    worker, server = pair
    server.send(said)
    with pytest.raises(WorkerDied, match="nonsense"):
        worker.answer(1, said_pid)
    assert not worker.reusable


@pytest.mark.parametrize(
    "end",
    [
        {"status": -1, "cpu": 0, "rss": 0, "left": False},  # no process ends so
        {"status": 0, "cpu": "lots", "rss": 0, "left": False},
        {"status": 0, "cpu": 0, "rss": 0},  # says nothing of what was left
    ],
)
def test_an_end_that_cannot_be_is_the_workers_death_not_a_result(
    pair: tuple[Worker, socket.socket], end: dict[str, object]
) -> None:
    worker, server = pair
    r, w = os.pipe()
    call = WarmCall(worker, os.getpid(), open(r, "rb"), open(os.dup(r), "rb"), w)
    server.send(json.dumps(end).encode())
    with pytest.raises(WorkerDied):
        call.poll_exit()
    assert not worker.reusable
    call.close()


def test_an_end_that_left_nothing_keeps_the_worker(pair: tuple[Worker, socket.socket]) -> None:
    worker, server = pair
    r, w = os.pipe()
    call = WarmCall(worker, os.getpid(), open(r, "rb"), open(os.dup(r), "rb"), w)
    assert call.poll_exit() is None  # nothing said yet
    server.send(json.dumps({"status": 256, "cpu": 0.5, "rss": 1024, "left": False}).encode())
    ended = call.poll_exit()
    assert ended is not None and os.waitstatus_to_exitcode(ended.status) == 1
    assert worker.reusable
    call.close()


def test_a_closed_server_is_a_dead_worker(pair: tuple[Worker, socket.socket]) -> None:
    worker, server = pair
    server.close()
    with pytest.raises(WorkerDied, match="exited"):
        worker.answer(1, said_pid)


def test_emptying_tmp_keeps_what_the_sandbox_made_and_nothing_else(tmp_path: Path) -> None:
    made = tmp_path / "home" / "runs"  # the parents bwrap made for a bind mount
    made.mkdir(parents=True)
    skeleton = set(forkserver._tree(str(tmp_path)))
    (tmp_path / "left.txt").write_text("x")
    (tmp_path / "dir" / "deep").mkdir(parents=True)
    (made / "planted").write_text("x")  # inside the skeleton, but new
    os.symlink("/", tmp_path / "root-link")
    forkserver._empty(str(tmp_path), skeleton)
    assert set(forkserver._tree(str(tmp_path))) == skeleton
    assert made.is_dir()


def _method_call(**fields: object) -> JobSpec:
    call = {"python": "3.11", "method": "predict"}
    spec: dict[str, object] = {
        "shell": SHELL,
        "env": {CALL_ENV: json.dumps(call), "MODEL": "small"},
        "inputs": {".sandrun/function.pkl": "a" * 64, ARGS_INPUT: "b" * 64},
    }
    return parse_spec(spec | fields)


def test_method_calls_share_an_instance_only_when_nothing_but_their_arguments_differ() -> None:
    base = _method_call()
    same = instance_of(base)
    assert same is not None
    other_args = {**base.inputs, ARGS_INPUT: "c" * 64}
    assert instance_of(_method_call(inputs=other_args)) == same
    other_method = {**base.env, CALL_ENV: json.dumps({"python": "3.11", "method": "other"})}
    assert instance_of(_method_call(env=other_method)) == same  # one instance, any method
    differ = [
        {"inputs": {**base.inputs, ".sandrun/function.pkl": "d" * 64}},  # args
        {"inputs": {**base.inputs, "weights.bin": "e" * 64}},  # what it loads
        {"env": {**base.env, "MODEL": "large"}},
        {"code": "f" * 64},
    ]
    for fields in differ:
        assert instance_of(_method_call(**fields)) not in (None, same), fields
    plain = {CALL_ENV: json.dumps({"python": "3.11"})}
    assert instance_of(_method_call(env=plain)) is None  # a function call: no instance
