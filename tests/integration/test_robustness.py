"""Robustness (issue 18): one bad value must not stall the pool, a value the store cannot
take is the caller's error (4xx, never the 503 clients retry), and an outage a little
longer than the lease must not fail good work.

Each runs against a real server (SQLite and PostgreSQL) and real agents on loopback.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandrun.states import JobState
from tests.integration.cluster import Cluster


def _as(cluster: Cluster, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.tokens[who]}"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"command": ["true"], "requires": {"pool": "x\u0000"}}, "requires"),
        ({"command": ["true"], "labels": {"x": "a\u0000b"}}, "labels"),
        ({"command": ["echo", "a\u0000"]}, "command"),
        ({"shell": "true", "env": {"A": "\u0000"}}, "env"),
        ({"shell": "true", "name": "ok", "outputs": ["a\u0000"]}, "outputs"),
    ],
)
def test_a_nul_in_a_spec_is_refused_and_the_pool_keeps_scheduling(
    cluster: Cluster, spec: dict[str, Any], field: str
) -> None:
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=_as(cluster, "alice"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert "NUL character" in answer.json()["message"]
    cluster.start_agent("a")
    with cluster.client() as client:
        assert client.jobs().jobs == []  # nothing was recorded
        job = client.run("echo fine", labels={"x": "y"}, requires={}).wait(60)
        assert job.record.state is JobState.COMPLETED
        listed = httpx.get(
            f"{cluster.url}/v1/jobs", params={"label": "x=y"}, headers=_as(cluster, "alice")
        )
        assert listed.status_code == 200 and [j["id"] for j in listed.json()["jobs"]] == [job.id]


BIG = "28032356125358211072"  # past 64 bits
INT32_PAST = "3000000000"  # past PostgreSQL's integer


def test_values_the_store_cannot_take_are_4xx_never_503(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit({"shell": "true"})
    user, agent = _as(cluster, "alice"), _as(cluster, "agents")
    tries: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
        ("GET", "/v1/jobs?name=a%00b", None, user),
        ("GET", "/v1/jobs?label=a%00=b", None, user),
        ("GET", "/v1/jobs/a%00b", None, user),
        ("GET", "/v1/jobs/a%00b/logs", None, user),
        ("GET", "/status/a%00b", None, user),
        ("POST", "/v1/jobs/wait", {"ids": ["a\u0000"], "timeout": 0}, user),
        ("POST", "/v1/agent/heartbeat", {"node": "n\u0000", "leases": []}, agent),
        *(
            ("GET", f"/v1/jobs/{job.id}/{path}?{name}={value}", None, user)
            for path, name in [
                ("outputs", "attempt"),
                ("logs", "attempt"),
                ("logs", "after_seq"),
                ("logs", "after_attempt"),
                ("events", "after"),
            ]
            for value in (BIG, INT32_PAST)
        ),
    ]
    for method, path, body, headers in tries:
        answer = httpx.request(method, f"{cluster.url}{path}", json=body, headers=headers)
        assert 400 <= answer.status_code < 500, f"{method} {path}: {answer.status_code}"
        assert answer.json()["code"] in ("invalid_spec", "invalid_input", "not_found"), path
    health = httpx.get(f"{cluster.url}/v1/jobs/{job.id}", headers=user)
    assert health.status_code == 200
