"""Schemathesis against the served OpenAPI schema, on SQLite and on PostgreSQL: positive and
negative data with every check, then the stateful phase (sequences of linked calls).

No request may get a 5xx, and every response must match the schema the server publishes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks
from starlette.types import Receive, Scope, Send

from sandrun.roles import Role
from sandrun.server import open_server_service
from sandrun.server.app import create_app

# Every check but object_level_authorization, which needs a second user's resources to
# aim at: tenant isolation has its own tests (test_server, test_attacks).
ALL_CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.use_after_free,
    checks.ensure_resource_availability,
    checks.ignored_auth,
]
# A pipeline definition's validity cannot all be said in JSON Schema (that `needs` name
# steps, that there is no cycle, what its templates give): a schema-valid definition may
# rightly be refused. Its refusals have their own tests (tests/contract/test_pipelines.py).
_SEMANTIC_BODIES = {("POST", "/v1/pipelines")}


# Nor can a job's mounts all be: two items of different shapes (a volume, a secret file,
# a data mount) naming one path, or one inside another, are refused (tests/unit/
# test_data_spec.py), and only such bodies skip the acceptance check.


def _checks(case: schemathesis.Case) -> list[Any]:
    if (case.method, case.path) in _SEMANTIC_BODIES or _mounts_overlap(case.body):
        return [c for c in ALL_CHECKS if c is not checks.positive_data_acceptance]
    return ALL_CHECKS


def _mounts_overlap(body: object) -> bool:
    jobs = body.get("jobs", [body]) if isinstance(body, dict) else []
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, dict):
            continue
        paths = []
        for v in job.get("volumes") or []:
            if isinstance(v, str):
                paths.append(f"/volumes/{v}")
            elif isinstance(v, dict):
                paths.append(
                    v.get("mount_path") or f"/volumes/{v.get('name') or v.get('volume_id')}"
                )
        paths += [
            s["file"] for s in job.get("secrets") or [] if isinstance(s, dict) and s.get("file")
        ]
        paths += [d.get("target") for d in job.get("data_mounts") or [] if isinstance(d, dict)]
        found = [p for p in paths if isinstance(p, str)]
        for i, one in enumerate(found):
            for other in found[i + 1 :]:
                if one == other or one.startswith(other + "/") or other.startswith(one + "/"):
                    return True
    return False


LONG_POLL_CAP = 0.2  # seconds a generated wait may hold its request (the schema allows 60)


class Current:
    """The app under test: the schema is loaded once, the store behind it changes."""

    app: ClassVar[Any] = None
    service: ClassVar[Any] = None
    headers: ClassVar[dict[str, str]] = {}

    @classmethod
    def serve(cls, db: str, artifacts: Path) -> Iterator[None]:
        service = open_server_service(db, artifacts=artifacts)
        token = service.create_token("fuzzer", Role.ADMIN)
        service.submit({"shell": "true"}, owner="fuzzer")
        cls.app, cls.headers = create_app(service, auth=True), {"Authorization": f"Bearer {token}"}
        cls.service = service
        try:
            yield
        finally:
            cls.app = cls.service = None
            service.close()

    @classmethod
    def reset(cls) -> None:
        """Back to the state the store started in (one job, no nodes), so that a sequence
        sees the same state whatever ran before it."""
        with cls.service.store.db.transaction() as tx:
            for table in _STATEFUL_TABLES:
                tx.execute_raw(f"DELETE FROM {table}")
        cls.service.submit({"shell": "true"}, owner="fuzzer")


# Children first (a job's rows go before it); tokens stay.
_STATEFUL_TABLES = (
    "pipeline_events",
    "job_deps",
    "logs",
    "outputs",
    "events",
    "job_inputs",
    "job_volumes",
    "attempts",
    "jobs",
    "pipelines",
    "nodes",
    "worker_keys",
    "blob_owners",
    "volumes",
    "secrets",
    "environments",
)


async def _dispatch(scope: Scope, receive: Receive, send: Send) -> None:
    await Current.app(scope, receive, send)


# Loaded at import (schemathesis parametrizes when the module loads), from a throwaway
# SQLite service; the tests then run against each store's own.
_ROOT = Path(tempfile.mkdtemp(prefix="sandrun-openapi-"))
_loading = Current.serve(str(_ROOT / "schema.db"), _ROOT / "artifacts")
next(_loading)
# A claim may rightly hold its request open for up to a minute (a long-poll): left out.
schema = schemathesis.openapi.from_asgi("/openapi.json", _dispatch).exclude(path="/v1/agent/claim")
_loading.close()
shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "s.db")
    if request.param == "postgres":
        db = str(request.getfixturevalue("pg_url"))
    yield from Current.serve(db, tmp_path / "artifacts")


def _short_polls(case: schemathesis.Case) -> None:
    """Long-polls end soon: the fuzzer's jobs never start, so a wait would hold its full
    timeout."""
    if not case.path.endswith("/wait"):
        return
    if case.method == "GET":
        case.query = {**(case.query or {})}
        case.query["timeout"] = _capped(case.query.get("timeout", LONG_POLL_CAP))
    elif isinstance(case.body, dict):
        case.body["timeout"] = _capped(case.body.get("timeout", LONG_POLL_CAP))


def _capped(value: Any) -> Any:
    """A number (or a number's text) capped at LONG_POLL_CAP; anything else as it was (a
    negative case's garbage must still be refused)."""
    if isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if not 0 <= number <= 60:  # out of range: the server must refuse it as it is
        return value
    capped = min(number, LONG_POLL_CAP)
    return str(capped) if isinstance(value, str) else capped


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_schema(case: schemathesis.Case, store: str) -> None:
    _short_polls(case)
    case.call_and_validate(headers=Current.headers, checks=_checks(case))


# Following a job's logs lasts as long as the job, and the fuzzer's jobs never start.
_linked = schema.exclude(path_regex=r"/logs/stream$")


class _Sequences(_linked.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        Current.reset()

    def before_call(self, case: schemathesis.Case) -> None:
        _short_polls(case)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": Current.headers}

    def validate_response(self, response: Any, case: schemathesis.Case, **kw: Any) -> None:
        case.validate_response(response, checks=_checks(case), headers=Current.headers)


def test_call_sequences_match_the_schema(store: str) -> None:
    # Which steps a sequence may take depends on what the server answered before (a job
    # list's first id...): each sequence starts from the same state (`setup`), and none is
    # replayed from an earlier run's database.
    _Sequences.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
