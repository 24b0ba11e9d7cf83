"""An attempt whose outputs the server's store refuses for good (an S3 store takes no
blob over 5 GiB) fails `output_limit` without them, signed anew, instead of being retried
as lost."""

from __future__ import annotations

from sandrun.agent.results import signed, uploaded
from sandrun.errors import UploadTooLarge
from sandrun.models import AttemptResult, Claim, JobRecord, OutputFile
from sandrun.signing import Identity, claim_of, verify
from sandrun.spec import parse_spec
from sandrun.states import FailureReason


class _Store:
    def __init__(self, refuse: bool) -> None:
        self.refuse, self.sent = refuse, 0

    def upload_outputs(self, result: AttemptResult) -> None:
        self.sent += 1
        if self.refuse:
            raise UploadTooLarge("a blob of 6442450944 bytes is over the 5 GiB an S3 store takes")


def _attempt() -> tuple[Claim, AttemptResult, Identity]:
    job = JobRecord.submitted(parse_spec({"shell": "true", "outputs": ["big.bin"]}), "alice", 0.0)
    claim = Claim(job=job, attempt=1, token="t", lease_expires_at=30.0)
    out = OutputFile(attempt=1, path="big.bin", digest="a" * 64, size=6 << 30)
    return claim, AttemptResult(exit_code=0, outputs=[out]), Identity.generate()


def test_a_refused_upload_fails_the_attempt_without_its_outputs_signed_anew() -> None:
    claim, result, key = _attempt()
    store = _Store(refuse=True)
    ended = uploaded(store, result, lambda r: signed(key, claim, r))  # type: ignore[arg-type]
    assert ended.failure_reason is FailureReason.OUTPUT_LIMIT
    assert ended.outputs == [] and ended.exit_code == 0
    assert ended.message is not None and "over the 5 GiB" in ended.message
    assert ended.signature is not None
    what = claim_of(claim.job.id, 1, claim.job.spec, ended)
    assert verify(key.worker_id, what, ended.signature)  # the server will take it


def test_an_accepted_upload_leaves_the_result_as_it_was() -> None:
    claim, result, key = _attempt()
    store = _Store(refuse=False)
    ended = uploaded(store, result, lambda r: signed(key, claim, r))  # type: ignore[arg-type]
    assert store.sent == 1
    assert ended.failure_reason is None and ended.outputs == result.outputs
