"""Volumes and secrets in the store (a `Store` mixin), and the volumes a job mounts,
recorded in its insert transaction (`attach`).

A volume's bytes live on one node, named in its row once a job has run with it; a job
that mounts it then requires that node (the label `sandrun/node`, which every node has),
so the queue's fit rule places it there with no rule of its own. Two unfinished jobs that
write one volume are refused at submit unless it is `shared` (or the second waits for the
first): the check runs under the volume's row lock.
"""

from __future__ import annotations

import json
from typing import Any

from sandrun.data_models import NamedEnvironment, SecretInfo, Volume, VolumeGrant
from sandrun.errors import ValidationError
from sandrun.errors.data import (
    EnvironmentNotFound,
    SecretNotFound,
    VolumeConflict,
    VolumeNotFound,
)
from sandrun.models import JobRecord
from sandrun.spec import JobSpec
from sandrun.spec.data import NODE_LABEL, VolumeMount
from sandrun.spec.environment import Environment, Packages
from sandrun.store.database import Database, Row, Tx
from sandrun.store.rows import spec_columns
from sandrun.store.transitions import event


class DataStore:
    db: Database

    # --- volumes --------------------------------------------------------------------

    def create_volume(
        self, volume_id: str, owner: str, name: str, size_mb: int, shared: bool, now: float
    ) -> Volume:
        with self.db.transaction() as tx:
            if tx.one("volume_by_name", owner=owner, name=name) is not None:
                raise VolumeConflict(
                    f"you have a volume named {name!r} already",
                    field="name",
                    suggestions=["pick another name, or `sandrun volume delete` it first"],
                )
            tx.run(
                "insert_volume",
                id=volume_id,
                owner=owner,
                name=name,
                size_mb=size_mb,
                shared=int(shared),
                now=now,
            )
            return _volume(_row(tx, volume_id))

    def volumes(self, owner: str | None) -> list[Volume]:
        with self.db.transaction(write=False) as tx:
            return [_volume(r) for r in tx.all("list_volumes", owner=owner)]

    def volume(self, owner: str | None, key: str) -> Volume:
        """An owner's volume by name or id (any owner's for None)."""
        with self.db.transaction(write=False) as tx:
            return _volume(_find(tx, owner, key))

    def delete_volume(self, volume: Volume, now: float, purge: JobRecord | None) -> None:
        """Forget a volume no unfinished job mounts. Where a node holds its bytes, `purge`
        (a job mounting it, queued here for that node) has them removed; its row stays,
        marked deleted, so the purge job can still name it."""
        with self.db.transaction() as tx:
            tx.one("lock_volume", id=volume.id)
            users = tx.all("volume_users", volume_id=volume.id)
            if users:
                raise VolumeConflict(
                    f"volume {volume.name!r} is mounted by {len(users)} unfinished job(s), "
                    f"e.g. {users[0]['job_id']}",
                    field="name",
                    suggestions=["wait for them or cancel them, then delete it"],
                )
            if purge is None:
                tx.run("drop_volume", id=volume.id)
                return
            tx.run("mark_volume_deleted", id=volume.id, now=now)
            tx.run("insert_job", id=purge.id, name=purge.name, owner=purge.owner,
                   state=purge.state.value, **_columns(purge.spec, volume.node),
                   not_before=purge.not_before, created_at=now)  # fmt: skip
            tx.run("insert_job_volume", job_id=purge.id, volume_id=volume.id, writes=1)
            event(tx, purge.id, None, "submitted", f"purges volume {volume.name}", now)
            tx.notify("submitted")

    def volume_pin(self, job_id: str) -> tuple[str, str] | None:
        """(volume name, node) if a volume the job mounts lives on a node: it runs there."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("job_volume_node", job_id=job_id)
        return (row["name"], row["node"]) if row is not None else None

    def grants(self, job: JobRecord, node: str) -> list[VolumeGrant] | None:
        """The volumes `job`, claimed by `node`, mounts: those no node holds yet are pinned
        to it now (and the unclaimed jobs that mount them follow). None if one lives on
        another node (pinned there since the claim was made): the claim goes back."""
        with self.db.transaction() as tx:
            row = tx.one("node_name", id=node)
            name = row["name"] if row else node
            grants = []
            for volume in tx.all("job_volumes", job_id=job.id):
                if volume["node"] is None:
                    if tx.run("pin_volume", id=volume["id"], node=name):
                        for other in tx.all("unclaimed_on_volume", volume_id=volume["id"]):
                            pinned = _pinned(json.loads(other["requires"]), name)
                            tx.run("set_requires", id=other["id"], requires=pinned)
                    volume = _row(tx, volume["id"])
                if volume["node"] != name:
                    return None
                grants += _grants(job.spec, volume)
            return grants

    # --- environments ---------------------------------------------------------------

    def put_environment(self, owner: str, name: str, spec: Packages, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("upsert_environment", owner=owner, name=name, spec=spec.model_dump_json(),
                   now=now)  # fmt: skip

    def environments(self, owner: str | None) -> list[NamedEnvironment]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("list_environments", owner=owner)
        return [NamedEnvironment.model_validate({**dict(r), "spec": json.loads(r["spec"])})
                for r in rows]  # fmt: skip

    def environment(self, owner: str, name: str) -> Environment | None:
        with self.db.transaction(write=False) as tx:
            row = tx.one("get_environment", owner=owner, name=name)
        return Environment.model_validate_json(row["spec"]) if row else None  # no file

    def delete_environment(self, owner: str, name: str) -> None:
        with self.db.transaction() as tx:
            if not tx.run("delete_environment", owner=owner, name=name):
                raise EnvironmentNotFound(f"you have no environment named {name!r}", field="name")

    # --- secrets --------------------------------------------------------------------

    def put_secret(self, owner: str, name: str, sealed: str, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("upsert_secret", owner=owner, name=name, sealed=sealed, now=now)

    def secrets(self, owner: str | None) -> list[SecretInfo]:
        with self.db.transaction(write=False) as tx:
            return [SecretInfo.model_validate(dict(r)) for r in tx.all("list_secrets", owner=owner)]

    def sealed_secrets(self, owner: str, names: list[str]) -> dict[str, str]:
        """The sealed values of those of `names` that `owner` has."""
        with self.db.transaction(write=False) as tx:
            rows = {n: tx.one("get_secret", owner=owner, name=n) for n in names}
        return {n: r["sealed"] for n, r in rows.items() if r is not None}

    def delete_secret(self, owner: str, name: str) -> None:
        with self.db.transaction() as tx:
            if not tx.run("delete_secret", owner=owner, name=name):
                raise SecretNotFound(f"you have no secret named {name!r}", field="name")


def attach(tx: Tx, job: JobRecord) -> None:
    """Record the volumes a new job mounts (its owner's, each under its row lock), refuse
    a second writer of one not shared, and pin the job to the node holding them."""
    spec, nodes = job.spec, set()
    waits_for = {job_id for job_id, _ in spec.dependencies}
    writes: dict[str, bool] = {}  # each volume once, written if any mount writes it
    for mount in spec.volumes:
        volume = _lookup(tx, job.owner, mount)
        writes[volume["id"]] = writes.get(volume["id"], False) or not mount.read_only
        if not mount.read_only and not volume["shared"]:
            writers = [
                u["job_id"]
                for u in tx.all("volume_users", volume_id=volume["id"])
                if u["writes"] and u["job_id"] not in waits_for
            ]
            if writers:
                raise VolumeConflict(
                    f"volume {volume['name']!r} is written by unfinished job {writers[0]}; "
                    "two jobs may write one volume at once only if it is shared",
                    field="volumes",
                    suggestions=[
                        f"mount it read_only, wait for it (after: [{writers[0]}]), or create "
                        "the volume with --shared"
                    ],
                )
        if volume["node"] is not None:
            nodes.add(volume["node"])
    for volume_id, written in writes.items():
        tx.run("insert_job_volume", job_id=job.id, volume_id=volume_id, writes=int(written))
    wanted = spec.requires.get(NODE_LABEL)
    if len(nodes) > 1 or (nodes and wanted is not None and wanted not in nodes):
        where = ", ".join(sorted(nodes | ({wanted} if wanted else set())))
        raise ValidationError(
            f"the job's volumes and requires put it on more than one node ({where})",
            field="volumes",
            suggestions=["mount volumes that live on one node"],
        )
    if nodes:
        tx.run("set_requires", id=job.id, requires=_pinned(spec.requires, nodes.pop()))


def _lookup(tx: Tx, owner: str, mount: VolumeMount) -> Row:
    key = mount.name or mount.volume_id or ""
    row = _find(tx, owner, key)
    locked = tx.one("lock_volume", id=row["id"])
    assert locked is not None
    return locked


def _find(tx: Tx, owner: str | None, key: str) -> Row:
    if key.startswith("vol-"):
        row = tx.one("volume_by_id", id=key)
        if row is not None and (row["deleted_at"] is not None or owner not in (None, row["owner"])):
            row = None  # another owner's volume is no more visible than a missing one
    else:
        row = tx.one("volume_by_name", owner=owner, name=key)
    if row is None:
        raise VolumeNotFound(
            f"you have no volume {key!r}",
            field="volumes",
            suggestions=[f"sandrun volume create {key}" if not key.startswith("vol-") else
                         "sandrun volume list"],
        )  # fmt: skip
    return row


def _grants(spec: JobSpec, volume: Row) -> list[VolumeGrant]:
    """One grant per place the spec mounts the volume (a purge job's: one, by id)."""
    mounts = [m for m in spec.volumes if volume["id"] == m.volume_id or volume["name"] == m.name]
    return [
        VolumeGrant(
            id=volume["id"],
            name=volume["name"],
            target=mount.target(volume["name"]),
            read_only=mount.read_only,
            size_mb=volume["size_mb"],
            node=volume["node"],
            deleted=volume["deleted_at"] is not None,
        )
        for mount in mounts or [VolumeMount(volume_id=volume["id"])]
    ]


def _row(tx: Tx, volume_id: str) -> Row:
    row = tx.one("volume_by_id", id=volume_id)
    assert row is not None
    return row


def _volume(row: Row) -> Volume:
    return Volume.model_validate({**dict(row), "shared": bool(row["shared"])})


def _columns(spec: JobSpec, node: str | None) -> dict[str, Any]:
    columns = spec_columns(spec)
    if node is not None:
        columns["requires"] = _pinned(spec.requires, node)
    return columns


def _pinned(requires: dict[str, str], node: str) -> str:
    """A job row's `requires` with the node holding its volumes: the fit rule does the rest."""
    return json.dumps({**requires, NODE_LABEL: node}, sort_keys=True)
