"""Signed results: the claim, signatures, and an agent's identity file."""

from __future__ import annotations

import stat
from pathlib import Path

from sandrun.signing import Identity, job_hash, result_claim, verify
from sandrun.spec import parse_spec

SPEC = parse_spec({"shell": "make", "inputs": {"a.txt": "a" * 64}})
OUTPUTS = {"out/model.pt": "b" * 64}


def test_a_signed_result_verifies_and_any_change_breaks_it(tmp_path: Path) -> None:
    agent = Identity.load_or_create(tmp_path / "identity.key")
    claim = result_claim("job-1", 1, SPEC, 0, OUTPUTS)
    signature = agent.sign(claim)
    assert verify(agent.worker_id, claim, signature)

    other_spec = parse_spec({"shell": "make", "inputs": {"a.txt": "c" * 64}})
    for changed in (
        result_claim("job-2", 1, SPEC, 0, OUTPUTS),
        result_claim("job-1", 2, SPEC, 0, OUTPUTS),
        result_claim("job-1", 1, other_spec, 0, OUTPUTS),
        result_claim("job-1", 1, SPEC, 1, OUTPUTS),
        result_claim("job-1", 1, SPEC, 0, {"out/model.pt": "d" * 64}),
        result_claim("job-1", 1, SPEC, 0, {}),
    ):
        assert not verify(agent.worker_id, changed, signature)
    stranger = Identity.load_or_create(tmp_path / "other.key")
    assert not verify(stranger.worker_id, claim, signature)
    assert not verify("not base64!", claim, signature)
    assert not verify(agent.worker_id, claim, "AAAA")


def test_the_job_hash_covers_the_inputs() -> None:
    assert job_hash(SPEC) != job_hash(parse_spec({"shell": "make"}))
    assert job_hash(SPEC) == job_hash(parse_spec({"inputs": {"a.txt": "a" * 64}, "shell": "make"}))


def test_an_identity_is_kept_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_create(path).worker_id == first.worker_id
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind
