"""Putting a pending job straight into a Store, as a submit would."""

from __future__ import annotations

from typing import Any

from sandrun.ids import new_id
from sandrun.models import JobRecord
from sandrun.spec import parse_spec
from sandrun.states import JobState
from sandrun.store import Store


def add(store: Store, at: float = 100.0, owner: str = "me", **spec: Any) -> JobRecord:
    """A pending job of `owner`, submitted (and eligible) at `at`; `spec` fields over
    `command: [true]`."""
    parsed = parse_spec({"command": ["true"], **spec})
    job = JobRecord(
        id=new_id(),
        name=parsed.display_name,
        owner=owner,
        state=JobState.PENDING,
        spec=parsed,
        priority=parsed.priority,
        attempts=0,
        not_before=at,
        created_at=at,
        updated_at=at,
    )
    store.insert_job(job)
    return job
