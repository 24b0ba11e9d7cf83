"""The pool's pure rules: digests, the verdict of replicas, costs and payouts, trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun.errors import BadSignature, InvalidSpec
from sandrun.models import AttemptResult, JobRecord, Usage
from sandrun.pool.consensus import Replica, decide, digest
from sandrun.pool.costs import MICRO, Metered, Terms, claim, least_claimed, pay, terms_for
from sandrun.pool.trust import Standing, needs_check, quarantine, unchecked_chance
from sandrun.service.signatures import checked
from sandrun.signing import Identity, meter_claim, result_claim
from sandrun.spec import parse_spec
from sandrun.spec.consensus import Consensus
from sandrun.spec.pricing import PoolPolicy, Prices


def _rules(text: object) -> Consensus:
    spec = parse_spec({"shell": "true", "consensus": text})
    assert spec.consensus is not None
    return spec.consensus


@pytest.mark.parametrize(
    ("given", "k", "n", "cap"),
    [("2-of-3", 2, 3, 5), ("2 of 3", 2, 3, 5), ("low", 1, 1, 3), ("medium", 2, 3, 5),
     ("high", 3, 5, 8), (2, 2, 2, 3), ({"k": 1, "n": 2, "max_replicas": 4}, 1, 2, 4)],
)  # fmt: skip
def test_consensus_shapes(given: object, k: int, n: int, cap: int) -> None:
    rules = _rules(given)
    assert (rules.k, rules.n, rules.cap) == (k, n, cap)


def test_a_bad_consensus_names_the_field() -> None:
    with pytest.raises(InvalidSpec) as caught:
        _rules("3-of-2")
    assert caught.value.field == "consensus"


def test_a_digest_binds_exit_code_agreed_outputs_and_stdout() -> None:
    outs = {"model.pt": "a" * 64, "log/run.txt": "b" * 64}
    base = digest(0, outs)
    assert digest(1, outs) != base
    assert digest(0, {**outs, "log/run.txt": "c" * 64}) != base
    # Only what must agree counts: a log that differs does not, a model that differs does.
    agreed = digest(0, outs, ["*.pt"])
    assert digest(0, {**outs, "log/run.txt": "c" * 64}, ["*.pt"]) == agreed
    assert digest(0, {**outs, "model.pt": "c" * 64}, ["*.pt"]) != agreed
    assert digest(0, outs, ["log"]) == digest(0, {"log/run.txt": "b" * 64})  # a directory
    assert digest(0, outs, stdout="d" * 64) != base


def test_votes_count_by_operator() -> None:
    rules = _rules("2-of-3")
    colluding = [
        Replica("r1", True, "bad", "mallory", "x1"),
        Replica("r2", True, "bad", "mallory", "x2"),  # one operator's second node
        Replica("r3", True, "good", "alice", "a"),
    ]
    verdict = decide(rules, 2, colluding)
    assert verdict.agreed is None and verdict.more == 1
    honest = [*colluding, Replica("r4", True, "good", "bob", "b")]
    verdict = decide(rules, 2, honest)
    assert verdict.agreed == "good"
    assert [r.node for r in verdict.agreeing] == ["a", "b"]
    assert [r.node for r in verdict.dissenting] == ["x1", "x2"]


def test_a_verdict_waits_while_agreement_may_still_come_and_stops_at_the_cap() -> None:
    rules = _rules({"k": 2, "n": 2, "max_replicas": 3})
    assert decide(rules, 2, [Replica("r1", True, "a", "o1"), Replica("r2", False)]).waiting
    three = [Replica(f"r{i}", True, f"d{i}", f"o{i}") for i in range(3)]
    assert decide(rules, 2, three).impossible


def test_a_claim_prices_what_was_held() -> None:
    terms = Terms(prices=Prices())
    cpu = Metered(seconds=10, cpus=2, memory_mb=0)
    assert claim(terms, cpu) == 20_000  # 2 CPUs x 10 s x $0.001
    a100 = Metered(seconds=10, cpus=1, memory_mb=1000, gpus=2, gpu_model="a100-80gb")
    assert claim(terms, a100) == round((0.001 + 2 * 0.05) * 10 * MICRO + 1000 * 100)
    assert claim(terms.model_copy(update={"multiplier": 2.0}), cpu) == 40_000


def test_the_most_a_job_can_cost_covers_every_replica_and_retry() -> None:
    pool = PoolPolicy(ledger=True)
    spec = parse_spec(
        {"shell": "true", "timeout": 10, "consensus": "2-of-3", "retries": {"limit": 1}}
    )
    assert terms_for(spec, pool).hold == 10_000 * 3 * 2
    assert terms_for(spec, PoolPolicy()).hold == 0  # the ledger is off


def test_payouts_take_the_least_claim_and_stop_at_the_hold() -> None:
    claims = [("a", "j/1", 500), ("b", "j/1", 300)]
    assert least_claimed(claims) == [("a", "j/1", 300), ("b", "j/1", 300)]
    terms = Terms(prices=Prices(), fee=0.1)
    paid = pay(terms, 700, [("a", "x", 500), ("b", "y", 500)])
    assert [(p.operator, p.amount, p.fee) for p in paid] == [("a", 450, 50), ("b", 180, 20)]


def test_trust_grows_with_the_streak_and_spot_checks_remain() -> None:
    terms = Terms(prices=Prices(), trust_streak=10, spot_check=0.1)
    assert unchecked_chance(Standing(streak=0), terms) == 0
    assert unchecked_chance(Standing(streak=5), terms) == pytest.approx(0.45)
    assert unchecked_chance(Standing(streak=50), terms) == pytest.approx(0.9)
    assert needs_check(Standing(streak=50), terms, draw=0.95)  # the spot check
    assert not needs_check(Standing(streak=50), terms, draw=0.5)


def test_quarantine_needs_enough_invalid_results_and_a_large_share() -> None:
    terms = Terms(prices=Prices(), quarantine_after=3, quarantine_ratio=0.5)
    assert not quarantine(Standing(valid=1, invalid=2), terms)
    assert quarantine(Standing(valid=2, invalid=3), terms)
    assert not quarantine(Standing(valid=10, invalid=3), terms)


def test_metering_is_signed_beside_the_unchanged_result_claim(tmp_path: Path) -> None:
    spec = parse_spec({"shell": "true"})
    plain = result_claim("j", 1, spec, 0, {})
    assert b'"v":1' in plain and b"usage" not in plain  # as the public API serves it
    assert meter_claim("j", 1, Usage(wall_seconds=1.0), None) is None  # nothing held said
    metered = meter_claim("j", 1, Usage(wall_seconds=1.0, cpus=2), "ab" * 32)
    assert metered is not None and b'"cpus":"2.000"' in metered
    assert meter_claim("j", 1, Usage(wall_seconds=1.0, cpus=2.0), "ab" * 32) == metered

    key = Identity.load_or_create(tmp_path / "k")
    job = JobRecord.submitted(spec, "alice", 1.0)
    result = AttemptResult(exit_code=0, usage=Usage(wall_seconds=1, cpus=1), stdout_sha256="c" * 64)
    signed = result.model_copy(
        update={
            "signature": key.sign(result_claim(job.id, 1, spec, 0, {})),
            "meter_signature": key.sign(meter_claim(job.id, 1, result.usage, "c" * 64) or b""),
        }
    )
    assert checked(key.worker_id, job, 1, signed) == signed
    inflated = signed.model_copy(update={"usage": Usage(wall_seconds=1, cpus=64)})
    with pytest.raises(BadSignature, match="metered"):
        checked(key.worker_id, job, 1, inflated)
    older = signed.model_copy(update={"meter_signature": None})  # an agent that signs no meter
    taken = checked(key.worker_id, job, 1, older)
    assert taken.usage.cpus is None and taken.stdout_sha256 is None
