"""Putting a pending job straight into a Store, as a submit would."""

from __future__ import annotations

from typing import Any

from sandrun.models import JobRecord
from sandrun.spec import parse_spec
from sandrun.store import Store


def add(store: Store, at: float = 100.0, owner: str = "me", **spec: Any) -> JobRecord:
    """A pending job of `owner`, submitted (and eligible) at `at`; `spec` fields over
    `command: [true]`."""
    job = JobRecord.submitted(parse_spec({"command": ["true"], **spec}), owner, at)
    store.insert_job(job)
    return job
