"""The log sink while the server is away: what could not be sent is kept and sent once, in
order, when it is back; what the server refuses for good is dropped, not retried."""

from __future__ import annotations

from typing import Any

from sandrun.agent.logsink import LogSink
from sandrun.errors import ServerUnreachable, StoreRefused
from sandrun.models import AttemptRef, Claim, JobRecord, LogChunk
from sandrun.spec import JobSpec


class Plane:
    """A control plane whose append_logs fails with `failures` in turn, then takes all."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.got: list[LogChunk] = []

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.got += chunks


def _sink(plane: Plane) -> LogSink:
    job = JobRecord.submitted(JobSpec.model_validate({"shell": "true"}), "me", 0.0)
    claim = Claim(job=job, attempt=1, token="t", lease_expires_at=0.0)
    control: Any = plane
    return LogSink(control, claim, interval=0.0)


def test_logs_an_outage_kept_are_sent_once_in_order_when_the_server_is_back() -> None:
    plane = Plane(ServerUnreachable("away"), ServerUnreachable("still away"))
    sink = _sink(plane)
    sink.add("stdout", b"one\n")
    assert sink.flush() is False  # kept
    sink.add("stderr", b"two\n")
    sink.drain(patience=30)
    assert [(c.seq, c.stream, c.data) for c in plane.got] == [
        (1, "stdout", b"one\n"),
        (2, "stderr", b"two\n"),
    ]


class LostReply(Plane):
    """A control plane that stores the first chunks it is sent, as a server does (a seq
    once), but whose reply is lost: the agent sees the server go away."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[int, bytes] = {}

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None:
        for chunk in chunks:
            self.stored.setdefault(chunk.seq, chunk.data)
        if len(self.stored) == 1:
            raise ServerUnreachable("killed after its commit")


def test_output_after_a_send_whose_reply_was_lost_is_not_lost() -> None:
    """The server stored "started" but died before answering; "done" must not be merged
    into the chunk it already has (it would be skipped as sent again)."""
    plane = LostReply()
    sink = _sink(plane)
    sink.add("stdout", b"started\n")
    assert sink.flush() is False
    sink.add("stdout", b"done\n")
    assert sink.flush() is True
    assert b"".join(plane.stored[seq] for seq in sorted(plane.stored)) == b"started\ndone\n"


def test_logs_the_server_refuses_for_good_are_not_retried() -> None:
    plane = Plane(StoreRefused("no"))
    sink = _sink(plane)
    sink.add("stdout", b"bad\n")
    assert sink.flush() is True  # dropped, said in the agent's log
    sink.add("stdout", b"good\n")
    sink.drain(patience=0)
    assert [c.data for c in plane.got] == [b"good\n"]
