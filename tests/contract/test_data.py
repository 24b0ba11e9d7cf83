"""Volumes and secrets on both backends: who may mount a volume, one writer at a time
unless it is shared, jobs following a volume to the node holding it, deletion, and
secrets sealed at rest and given only with a claim."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import InvalidSpec, SandrunError, ValidationError
from sandrun.errors.data import SecretNotFound, VolumeConflict, VolumeNotFound
from sandrun.models import AttemptResult, Capacity, Claim
from sandrun.service import Service
from sandrun.service.data import PURGE_LABEL
from sandrun.service.secretbox import SecretBox
from sandrun.states import JobState
from sandrun.store import Store
from sandrun.store.postgres import PostgresDatabase
from tests.contract.flow import Clock

ROOM = Capacity(cpus=8, memory_mb=16384)
KEY = bytes(range(32))


def _service(store: Store, root: Path) -> Service:
    return Service(
        store, LocalArtifactStore(root / "blobs"), clock=Clock(), secret_box=SecretBox(KEY)
    )


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    s = _service(store, tmp_path)
    for name in ("a", "b"):
        s.register_node(name, ROOM, node_id=f"{name}/1")
    return s


def _writer(service: Service, volume: str = "data", owner: str = "alice", **more: object) -> str:
    spec = {"shell": "true", "volumes": [{"name": volume}], **more}
    return service.submit(spec, owner).id


def _claim(service: Service, node: str) -> Claim | None:
    return service.claim(f"{node}/1", ROOM)


def _finish(service: Service, claim: Claim) -> None:
    store, now = service.store, service.clock()
    store.start_attempt(claim.job.id, claim.attempt, claim.token, now)
    store.finish_attempt(
        claim.job.id, claim.attempt, claim.token, AttemptResult(exit_code=0), service.decide, now
    )


def test_volumes_are_their_owner_s_by_name_or_id(service: Service) -> None:
    volume = service.create_volume("alice", "data", "1GB")
    assert (volume.name, volume.size_mb, volume.shared, volume.node) == ("data", 1024, False, None)
    assert service.create_volume("alice", "huge", 2**50).size_mb == 2**50  # a bigint
    assert [v.name for v in service.list_volumes("alice")] == ["data", "huge"]
    assert service.list_volumes("bob") == []
    with pytest.raises(VolumeConflict, match="already") as refused:
        service.create_volume("alice", "data")
    assert refused.value.field == "name"
    with pytest.raises(ValidationError) as bad:
        service.create_volume("alice", "no/slash")
    assert bad.value.field == "name"
    with pytest.raises(ValidationError) as size:
        service.create_volume("alice", "big", "lots")
    assert size.value.field == "size"
    # Another owner cannot mount it, by name or by id: nothing is recorded.
    before = service.list_jobs(viewer=None).jobs
    for key in ("data", volume.id):
        field = "volume_id" if key.startswith("vol-") else "name"
        with pytest.raises(VolumeNotFound):
            service.submit({"shell": "true", "volumes": [{field: key}]}, "bob")
        with pytest.raises(VolumeNotFound):
            service.get_volume(key, "bob")
    assert service.list_jobs(viewer=None).jobs == before
    assert service.get_volume(volume.id, None).owner == "alice"  # an admin's view


def test_one_writer_at_a_time_unless_shared(service: Service) -> None:
    service.create_volume("alice", "data")
    first = _writer(service)
    before = len(service.list_jobs(viewer=None).jobs)
    with pytest.raises(VolumeConflict) as busy:
        _writer(service)
    assert busy.value.field == "volumes" and first in busy.value.message
    assert len(service.list_jobs(viewer=None).jobs) == before  # nothing recorded
    # A reader may mount it meanwhile, and so may a writer that waits for the first.
    service.submit({"shell": "true", "volumes": [{"name": "data", "read_only": True}]}, "alice")
    _writer(service, after=[first])
    # A shared volume takes writers together.
    service.create_volume("alice", "scratch", shared=True)
    _writer(service, "scratch")
    _writer(service, "scratch")


def test_the_writer_rule_holds_across_concurrent_submits(
    store: Store, service: Service, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two stores (two servers on PostgreSQL) submit writers of one volume at once."""
    other = store
    if isinstance(store.db, PostgresDatabase):
        other = Store(PostgresDatabase(request.getfixturevalue("pg_url")))
    services = [service, _service(other, tmp_path / "other")]
    service.create_volume("alice", "data")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def submit(i: int) -> None:
        barrier.wait()
        try:
            _writer(services[i % 2])
            outcomes.append("accepted")
        except VolumeConflict:
            outcomes.append("busy")
        except SandrunError as exc:  # pragma: no cover - shown if it happens
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if other is not store:
        other.close()
    assert sorted(outcomes) == ["accepted"] + ["busy"] * 7


def test_jobs_follow_a_volume_to_the_node_that_holds_it(service: Service) -> None:
    service.create_volume("alice", "data")
    first = _writer(service)
    waiting = service.submit(
        {"shell": "true", "volumes": [{"name": "data", "read_only": True}]}, "alice"
    ).id
    claim = _claim(service, "a")
    assert claim is not None and claim.job.id == first
    assert [(g.name, g.target, g.read_only, g.node) for g in claim.volumes] == [
        ("data", "/volumes/data", False, "a")
    ]
    assert service.get_volume("data", "alice").node == "a"
    # The reader queued before the volume was pinned now follows it: b cannot take it.
    assert _claim(service, "b") is None
    _finish(service, claim)
    later = service.submit(
        {"shell": "true", "volumes": [{"name": "data", "mount_path": "/ckpt"}]}, "alice"
    ).id
    assert _claim(service, "b") is None
    taken = {c.job.id for c in (_claim(service, "a"), _claim(service, "a")) if c is not None}
    assert taken == {waiting, later}

    # Why one waits: room on a, the volume's node; a too big for it; a gone.
    def why(**more: object) -> str | None:
        spec = {"shell": "true", "volumes": [{"name": "data", "read_only": True}], **more}
        return service.why_pending(service.submit(spec, "alice").id)

    assert why() == "waiting for room on a node that can hold it (a); jobs ahead of it come first"
    assert why(cpus=16) == (
        "its volume 'data' lives on node a, which cannot hold it: needs 16 CPUs; "
        "a has 8 CPUs, 16 GiB"
    )
    service.heartbeat("a/1", [], state="stopped")
    assert why() == (
        "its volume 'data' lives on node a, which is not connected; "
        "it starts when that node's agent is back"
    )


def test_a_claim_whose_volume_was_pinned_elsewhere_goes_back(service: Service) -> None:
    """Two jobs of one unpinned volume claimed at once by two nodes: the second to be
    equipped hands its claim back, and the job is claimed again on the right node."""
    service.create_volume("alice", "data", shared=True)
    one, two = _writer(service), _writer(service)
    store = service.store
    raw_a = store.claim("a/1", ROOM, service.clock(), 30.0, service.policy)
    raw_b = store.claim("b/1", ROOM, service.clock(), 30.0, service.policy)
    assert raw_a is not None and raw_b is not None
    assert service._equipped(raw_a, "a/1") is not None
    assert service._equipped(raw_b, "b/1") is None  # handed back
    assert service.get(raw_b.job.id).state is JobState.PENDING
    assert service.get(raw_b.job.id).retries_used == 0
    assert _claim(service, "b") is None
    again = _claim(service, "a")
    assert again is not None and {raw_a.job.id, again.job.id} == {one, two}


def test_a_volume_in_use_is_not_deleted_and_a_deleted_one_is_purged_on_its_node(
    service: Service,
) -> None:
    unused = service.create_volume("alice", "unused")
    service.delete_volume("unused", "alice")
    assert service.list_volumes("alice") == []
    with pytest.raises(VolumeNotFound):
        service.get_volume(unused.id, "alice")
    service.create_volume("alice", "data")
    job = _writer(service)
    with pytest.raises(VolumeConflict):
        service.delete_volume("data", "alice")
    claim = _claim(service, "a")
    assert claim is not None and claim.job.id == job
    _finish(service, claim)
    deleted = service.delete_volume("data", "alice")
    assert service.list_volumes("alice") == []
    service.create_volume("alice", "data")  # the name is free again
    assert _claim(service, "b") is None  # the purge job runs where the bytes are
    purge = _claim(service, "a")
    assert purge is not None and purge.job.spec.labels[PURGE_LABEL] == deleted.id
    assert [(g.id, g.deleted) for g in purge.volumes] == [(deleted.id, True)]


def test_a_consensus_job_cannot_mount_a_volume(service: Service) -> None:
    service.create_volume("alice", "data")
    with pytest.raises(InvalidSpec, match="consensus"):
        _writer(service, consensus="2-of-3")


def test_secrets_are_sealed_at_rest_and_given_only_with_a_claim(service: Service) -> None:
    value = "hunter2-do-not-leak"
    service.set_secret("alice", "API_KEY", value)
    service.set_secret("bob", "API_KEY", "bobs-own")
    assert [(s.owner, s.name) for s in service.list_secrets("alice")] == [("alice", "API_KEY")]
    assert "value" not in service.list_secrets("alice")[0].model_dump()
    with pytest.raises(SecretNotFound) as missing:
        service.submit({"shell": "true", "secrets": ["API_KEY", "NOPE"]}, "alice")
    assert missing.value.field == "secrets.1"
    job = service.submit(
        {"shell": "true", "secrets": [{"name": "API_KEY", "file": "/run/secrets/k"}]}, "alice"
    )
    assert value not in job.model_dump_json()
    claim = _claim(service, "a")
    assert claim is not None and claim.secrets == {"API_KEY": value}  # alice's, not bob's
    # The database holds it sealed: no row anywhere has the value.
    with service.store.db.transaction(write=False) as tx:
        rows = tx.execute_raw("SELECT owner, name, sealed FROM secrets")
    assert rows and all(value not in str(dict(r)) for r in rows)
    # A row moved to another owner does not open (the seal is bound to owner and name).
    box = SecretBox(KEY)
    sealed = next(r["sealed"] for r in rows if r["owner"] == "alice")
    assert box.open("alice", "API_KEY", sealed) == value
    assert box.open("bob", "API_KEY", sealed) is None
    assert SecretBox(bytes(32)).open("alice", "API_KEY", sealed) is None  # another key
    # Deleted after the submit: the claim lacks it, and the agent fails the attempt.
    later = service.submit({"shell": "true", "secrets": ["API_KEY"]}, "alice")
    service.delete_secret("alice", "API_KEY")
    claim = _claim(service, "a")
    assert claim is not None and claim.job.id == later.id and claim.secrets == {}
    with pytest.raises(SecretNotFound):
        service.delete_secret("alice", "API_KEY")


def test_a_server_without_a_key_refuses_secrets(store: Store, tmp_path: Path) -> None:
    bare = Service(store, LocalArtifactStore(tmp_path / "blobs"), clock=Clock())
    with pytest.raises(ValidationError, match="no key") as refused:
        bare.set_secret("alice", "K", "v")
    assert refused.value.field == "secrets"
    with pytest.raises(ValidationError, match="no key"):
        bare.submit({"shell": "true", "secrets": ["K"]}, "alice")
