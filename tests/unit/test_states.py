from __future__ import annotations

import itertools

import pytest

from sandrun.errors import IllegalTransition
from sandrun.states import (
    ATTEMPT_TRANSITIONS,
    JOB_TRANSITIONS,
    TERMINAL,
    AttemptState,
    JobState,
    check_attempt_transition,
    check_job_transition,
)


def test_the_happy_path_is_allowed() -> None:
    path = [JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.COMPLETED]
    for old, new in itertools.pairwise(path):
        check_job_transition(old, new)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_never_change(terminal: JobState) -> None:
    assert terminal.is_terminal
    for new in JobState:
        with pytest.raises(IllegalTransition):
            check_job_transition(terminal, new)


def test_a_pending_job_cannot_complete_without_running() -> None:
    with pytest.raises(IllegalTransition, match="from pending to completed"):
        check_job_transition(JobState.PENDING, JobState.COMPLETED)


def test_a_finished_attempt_cannot_be_reopened() -> None:
    with pytest.raises(IllegalTransition):
        check_attempt_transition(AttemptState.LOST, AttemptState.RUNNING)


def test_every_state_has_a_row() -> None:
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert set(ATTEMPT_TRANSITIONS) == set(AttemptState)
