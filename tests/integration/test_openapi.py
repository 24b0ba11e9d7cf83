"""Schemathesis against the served OpenAPI schema: positive and negative data, all checks.

No request may get a 5xx, and every response must match the schema the server publishes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import Role
from sandrun.server.app import create_app
from sandrun.service import Service
from sandrun.store import open_sqlite

ALL_CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.use_after_free,
    checks.ensure_resource_availability,
    checks.ignored_auth,
]
# Built at import, because schemathesis parametrizes tests when the module loads.
_ROOT = Path(tempfile.mkdtemp(prefix="sandrun-openapi-"))
_SERVICE = Service(open_sqlite(_ROOT / "s.db"), LocalArtifactStore(_ROOT / "artifacts"))
_TOKEN = _SERVICE.create_token("fuzzer", Role.ADMIN)
_SERVICE.submit({"shell": "true"}, owner="fuzzer")
# A claim may rightly hold its request open for up to a minute (a long-poll): left out.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_SERVICE, auth=True)).exclude(
    path="/v1/agent/claim"
)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _SERVICE.close()
    shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"}, checks=ALL_CHECKS)
