from __future__ import annotations

from typing import Any

from sandrun.models import AttemptResult, JobRecord
from sandrun.service.retry import MAX_INFRA_RETRIES, decide
from sandrun.spec import parse_spec
from sandrun.states import AttemptState, FailureReason, JobState

NOW = 1_000.0


def job(retries: Any = 0, **fields: Any) -> JobRecord:
    return JobRecord(
        id="j",
        name="j",
        owner="o",
        state=JobState.RUNNING,
        spec=parse_spec({"command": ["x"], "retries": retries, "timeout": 10}),
        priority=0,
        attempts=1,
        not_before=0,
        created_at=0,
        updated_at=0,
        **fields,
    )


def failed(reason: FailureReason, code: int | None = 1) -> AttemptResult:
    return AttemptResult(exit_code=code, failure_reason=reason)


def test_success_completes() -> None:
    d = decide(job(), AttemptState.COMPLETED, AttemptResult(exit_code=0), NOW)
    assert d.state is JobState.COMPLETED


def test_failure_without_retries_fails_with_the_reason() -> None:
    d = decide(job(), AttemptState.FAILED, failed(FailureReason.EXIT_CODE, 3), NOW)
    assert d.state is JobState.FAILED and d.message == "exited with code 3"


def test_failure_with_retries_left_is_retried_after_backoff() -> None:
    policy = {"limit": 3, "backoff": 2, "factor": 3}
    d = decide(
        job(policy, retries_used=1), AttemptState.FAILED, failed(FailureReason.EXIT_CODE), NOW
    )
    assert d.state is JobState.PENDING and d.retries_used == 2
    assert d.not_before == NOW + 6
    assert "retry 2 of 3" in (d.message or "")


def test_retries_run_out() -> None:
    d = decide(job(2, retries_used=2), AttemptState.FAILED, failed(FailureReason.EXIT_CODE), NOW)
    assert d.state is JobState.FAILED


def test_timeouts_retry_unless_excluded() -> None:
    d = decide(job(1), AttemptState.FAILED, failed(FailureReason.TIMEOUT), NOW)
    assert d.state is JobState.PENDING
    only_exit = {"limit": 1, "on": ["exit_code"]}
    d = decide(job(only_exit), AttemptState.FAILED, failed(FailureReason.TIMEOUT), NOW)
    assert d.state is JobState.FAILED and d.message == "timed out after 10.0s"


def test_exit_codes_named_as_final_are_not_retried() -> None:
    policy = {"limit": 5, "no_retry_exit_codes": [2]}
    d = decide(job(policy), AttemptState.FAILED, failed(FailureReason.EXIT_CODE, 2), NOW)
    assert d.state is JobState.FAILED


def test_lost_nodes_retry_without_using_the_jobs_retries() -> None:
    d = decide(job(0), AttemptState.LOST, failed(FailureReason.NODE_LOST, None), NOW)
    assert d.state is JobState.PENDING and d.retries_used == 0 and d.infra_retries == 1
    d = decide(
        job(0, infra_retries=MAX_INFRA_RETRIES),
        AttemptState.LOST,
        failed(FailureReason.NODE_LOST, None),
        NOW,
    )
    assert d.state is JobState.FAILED


def test_spawn_errors_are_not_retried() -> None:
    d = decide(job(3), AttemptState.FAILED, failed(FailureReason.SPAWN_ERROR, 127), NOW)
    assert d.state is JobState.FAILED


def test_a_cancel_request_wins_over_retry() -> None:
    d = decide(
        job(3, cancel_requested=True), AttemptState.FAILED, failed(FailureReason.EXIT_CODE), NOW
    )
    assert d.state is JobState.CANCELLED
