"""The long-poll board: one poll woken per change, by shape, and no store look while
nothing changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from sandrun.server.workboard import Shape, WorkBoard

SMALL: Shape = ('{"cpus": 1}', "{}", "agents")
GPU: Shape = ('{"cpus": 1, "gpus": 1}', "{}", "agents")


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(test, 10))


async def _polls(board: WorkBoard, shapes: list[Shape]) -> list[asyncio.Task[bool]]:
    seen = board.generation
    polls = [asyncio.create_task(board.wait(seen, 5.0, shape)) for shape in shapes]
    while board.waiting() < len(shapes):
        await asyncio.sleep(0)
    return polls


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_change_wakes_one_poll_the_longest_waiting() -> None:
    async def test() -> None:
        board = WorkBoard(recheck=30)
        polls = await _polls(board, [SMALL] * 5)
        board.bump()
        await _settle()
        assert [p.done() for p in polls] == [True, False, False, False, False]
        board.took("node-0")  # it claimed a job: there may be more, so one more wakes
        await _settle()
        assert [p.done() for p in polls] == [True, True, False, False, False]
        board.close()

    run(test())


def test_a_miss_wakes_a_poll_of_another_shape_only() -> None:
    async def test() -> None:
        board = WorkBoard(recheck=30)
        polls = await _polls(board, [SMALL, SMALL, SMALL, GPU])
        seen = board.generation
        board.bump()
        await _settle()
        assert polls[0].done()
        # The small node found nothing: the other small ones would not either; the GPU one may.
        board.found_nothing("node-0", SMALL, seen + 1)
        await _settle()
        assert [p.done() for p in polls] == [True, False, False, True]
        board.found_nothing("node-3", GPU, seen + 1)
        await _settle()
        assert [p.done() for p in polls] == [True, False, False, True]  # nobody left to try
        board.bump()  # a new change: small nodes are worth waking again
        await _settle()
        assert polls[1].done() and not polls[2].done()
        board.close()

    run(test())


def test_an_idle_node_skips_the_store_until_something_changes_or_recheck_passes() -> None:
    board = WorkBoard(recheck=0.2)
    assert board.worth_asking("n", SMALL)
    board.found_nothing("n", SMALL, board.generation)
    assert not board.worth_asking("n", SMALL)
    assert board.worth_asking("n", GPU)  # more room than the last look had
    assert board.worth_asking("other", SMALL)
    board.bump()
    assert board.worth_asking("n", SMALL)
    board.found_nothing("n", SMALL, board.generation)
    deadline = time.monotonic() + 5
    while not board.worth_asking("n", SMALL):  # what time alone changes is looked at again
        assert time.monotonic() < deadline, "recheck never came"
        time.sleep(0.05)


def test_a_poll_that_sees_a_newer_generation_does_not_wait() -> None:
    async def test() -> None:
        board = WorkBoard(recheck=30)
        seen = board.generation
        board.bump()
        assert await board.wait(seen, 5.0, SMALL) is True
        assert await board.wait(board.generation, 0.05, SMALL) is False  # timed out

    run(test())


def test_a_backoff_ending_moves_the_generation_and_wakes_a_poll() -> None:
    async def test() -> None:
        board = WorkBoard(recheck=30)
        looks = 0

        async def next_eligible() -> float | None:
            nonlocal looks
            looks += 1
            return time.time() + 0.2

        polls = await _polls(board, [SMALL])
        before = board.generation
        await board.time_next(next_eligible)
        await board.time_next(next_eligible)  # one look per generation, whoever asks
        assert looks == 1
        assert await polls[0] is True
        assert board.generation == before + 1
        board.close()

    run(test())


def test_an_instant_already_past_sets_no_timer() -> None:
    async def test() -> None:
        board = WorkBoard(recheck=30)

        async def past() -> float | None:
            return time.time() - 5

        before = board.generation
        await board.time_next(past)
        await asyncio.sleep(0.1)
        assert board.generation == before  # no bump loop for a job nobody can take
        board.close()

    run(test())
