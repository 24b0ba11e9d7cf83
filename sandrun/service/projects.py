"""The public API's submit: an uploaded project (files, or an archive, and a manifest)
becomes a job that runs its entrypoint — checked against the caller's quota, bundled and
stored as the job's code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandrun.artifacts.bundle import pack
from sandrun.models import JobRecord
from sandrun.service.manifest import job_fields, read_manifest, unpack
from sandrun.service.quota import PublicApi

if TYPE_CHECKING:
    from sandrun.service.service import Service


def submit_project(
    service: Service,
    owner: str,
    uploads: list[tuple[str, bytes]],
    manifest_text: str | None,
    quota: PublicApi,
) -> tuple[JobRecord, int]:
    """Submit the project; return the job and how many pending jobs go before it.
    Anonymous callers (`anon:<address>`) are held to `quota` first."""
    tree = unpack(uploads)
    manifest = read_manifest(manifest_text, tree)
    named = frozenset(e.name for e in service.list_environments(owner))
    fields = job_fields(manifest, tree, named)
    if owner.startswith("anon:"):
        quota.check(*service.owner_usage(owner))
    bundle = pack((path, data, path.endswith(".sh")) for path, data in tree.items())
    digest, _ = service.upload(bundle, owner)
    job = service.submit({**fields, "code": digest}, owner=owner)
    return job, service.queue_position(job)
