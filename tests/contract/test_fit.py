"""The fit rule is stated twice: in SQL (the claim's `fragment_fits`, one per dialect) and
in Python (`placement.fits`, which explains why a job waits). They must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandrun.models import AttemptResult, Capacity
from sandrun.service.placement import fits
from sandrun.service.retry import decide
from sandrun.spec import parse_spec
from sandrun.spec.policy import Policy
from sandrun.store import Store
from tests.contract.queued import add

SQL = Path(__file__).resolve().parents[2] / "sandrun" / "store" / "sql"
NOW = 200.0
A100 = Capacity(cpus=8, memory_mb=32 << 10, gpus=2, gpu_type="a100", gpu_memory_gb=80)
PLAIN = Capacity(cpus=2, memory_mb=4096)

# (why, the job's spec fields, the node, its labels, whether the job fits)
CASES: list[tuple[str, dict[str, Any], Capacity, dict[str, str], bool]] = [
    ("cpus exactly", {"cpus": 2}, PLAIN, {}, True),
    ("cpus over", {"cpus": 2.5}, PLAIN, {}, False),
    ("memory exactly", {"memory": "4GiB"}, PLAIN, {}, True),
    ("memory over", {"memory": "5GiB"}, PLAIN, {}, False),
    ("no memory named, on a node with none", {}, Capacity(cpus=1, memory_mb=0), {}, True),
    ("a GPU on a node without", {"gpus": 1}, PLAIN, {}, False),
    ("GPUs, any model", {"gpus": 2}, A100, {}, True),
    ("more GPUs than the node has", {"gpus": 3}, A100, {}, False),
    ("the node's model", {"gpus": "a100"}, A100, {}, True),
    ("the node's model among others", {"gpus": "h100,a100"}, A100, {}, True),
    ("another model", {"gpus": "h100"}, A100, {}, False),
    (
        "a model, on a node whose GPUs have none",
        {"gpus": "a100"},
        Capacity(cpus=8, memory_mb=1024, gpus=2),
        {},
        False,
    ),
    ("GPU memory exactly", {"gpus": "a100-80gb"}, A100, {}, True),
    (
        "more GPU memory than the node's",
        {"gpus": "a100-80gb"},
        A100.model_copy(update={"gpu_memory_gb": 40}),
        {},
        False,
    ),
    ("no GPU, on a GPU node", {"cpus": 1}, A100, {}, True),
    ("a label that matches", {"requires": {"zone": "eu"}}, PLAIN, {"zone": "eu"}, True),
    ("a label that differs", {"requires": {"zone": "eu"}}, PLAIN, {"zone": "us"}, False),
    ("a label the node lacks", {"requires": {"zone": "eu"}}, PLAIN, {}, False),
    (
        "two labels, one missing",
        {"requires": {"zone": "eu", "disk": "ssd"}},
        PLAIN,
        {"zone": "eu"},
        False,
    ),
    (
        "labels among others",
        {"requires": {"zone": "eu"}},
        PLAIN,
        {"zone": "eu", "rack": "7"},
        True,
    ),
    ("a dotted key", {"requires": {"zone.name": "eu"}}, PLAIN, {"zone.name": "eu"}, True),
    ("a value that only looks equal", {"requires": {"n": "1"}}, PLAIN, {"n": "01"}, False),
    ("a number-like value", {"requires": {"n": "1"}}, PLAIN, {"n": "1"}, True),
    ("an empty value", {"requires": {"n": ""}}, PLAIN, {"n": ""}, True),
]


def test_every_case_reads_as_expected_in_python() -> None:
    wrong = [
        why
        for why, spec, node, labels, expected in CASES
        if fits(parse_spec({"command": ["true"], **spec}), node, labels) is not expected
    ]
    assert wrong == []


def test_the_claim_agrees_with_placement_fits(store: Store) -> None:
    """Each case on its own node: the node, asking with all its room free, gets the job
    exactly when the table (and placement.fits) says it fits."""
    disagree = []
    for number, (why, spec, node, labels, expected) in enumerate(CASES):
        name = f"node{number}"
        store.register_node(name, name, node, labels, NOW)
        job = add(store, owner=f"owner{number}", **spec)
        claim = store.claim(name, node, NOW, 30.0, Policy())
        if claim is not None:
            assert claim.job.id == job.id  # the only pending job
            store.start_attempt(job.id, claim.attempt, claim.token, NOW)
            store.finish_attempt(
                job.id, claim.attempt, claim.token, AttemptResult(exit_code=0), decide, NOW
            )
        else:
            store.request_cancel(job.id, NOW)
        python = fits(job.spec, node, labels)
        if (claim is not None) is not expected or python is not expected:
            disagree.append(f"{why}: SQL says {claim is not None}, Python {python}")
    assert disagree == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_the_fit_rule_is_written_once_per_dialect(dialect: str) -> None:
    text = (SQL / dialect / "queries.sql").read_text()
    assert text.count("gpu_memory_gb <= :gpu_memory_gb") == 1  # fragment_fits
    assert "gpu_memory_gb <=" not in (SQL / "queries.sql").read_text()
