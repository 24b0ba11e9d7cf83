"""Interactive sessions (`client.session()`, `.interactive()`, issue 25): a job keeps one
Python interpreter alive, cells keep their state, and it ends on close, on idle, or on
cancel; embedded and through a server's remote agent."""

from __future__ import annotations

import pytest

from sandrun.client import Client
from sandrun.errors import IllegalTransition
from sandrun.states import FailureReason, JobState
from tests.integration.cluster import Cluster
from tests.integration.conftest import Local


def _three_cells(client: Client) -> None:
    with client.session(cpus=1, memory="256MB") as session:
        assert session.execute("x = 41").value is None
        step = session.execute("x += 1\nprint('added one')")
        assert (step.stdout, step.value, step.ok) == ("added one\n", None, True)
        assert session.execute("x").value == "42"
        failed = session.execute("1 / 0")
        assert not failed.ok and failed.error_type == "ZeroDivisionError"
        assert "ZeroDivisionError" in (failed.error or "")
        assert session.execute("import os; os.environ['SANDRUN_JOB_ID']").value == repr(
            session.job.id
        )
        assert session.execute("x * 2").value == "84"  # the error lost no state
        job = session.job
        assert job.record.spec.memory == 256
    assert job.refresh().status is JobState.COMPLETED  # closed: it ends well
    kinds = [e.kind for e in job.events]
    assert kinds.count("exec") >= 6  # each cell is an exec, on the record


def test_a_session_keeps_its_state_across_cells_embedded(local: Local) -> None:
    _three_cells(local.client)


def test_a_session_keeps_its_state_across_cells_through_a_server(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        _three_cells(alice)


def test_a_session_ends_when_idle_and_when_cancelled(local: Local) -> None:
    idle = local.client.job().cpus(1).interactive(idle=1)
    assert idle.execute("y = 1").ok
    job = idle.job.wait(60)
    assert job.status is JobState.COMPLETED
    assert "no cell for 1 s" in job.log_text()
    with pytest.raises(IllegalTransition):
        idle.execute("y")

    cancelled = local.client.session()
    assert cancelled.execute("2 + 2").value == "4"
    cancelled.job.cancel().wait(30)
    assert cancelled.job.record.failure_reason is FailureReason.CANCELLED
    with pytest.raises(IllegalTransition):
        cancelled.execute("2 + 2")
    assert cancelled.close().status is JobState.CANCELLED  # closing an ended one: no-op
