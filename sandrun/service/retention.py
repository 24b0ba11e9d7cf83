"""`sandrun gc`: what retention removes, in what order, and the report it prints.

Logs go first (they are most of a job's bytes), then, if asked, the job records, then
agents silent since the cutoff with nothing running; then blobs that no remaining output
or job input refers to. Blobs are only removed if they are older than
the cutoff too, so an upload whose job has not reported yet is never taken.
"""

from __future__ import annotations

from itertools import islice

from sandrun.artifacts import ArtifactStore
from sandrun.retention_models import GcReport
from sandrun.store import Store, retention

_DIGEST_BATCH = 500


def collect(
    store: Store,
    artifacts: ArtifactStore,
    *,
    cutoff: float,
    now: float,
    lease_seconds: float,
    purge_jobs: bool = False,
) -> GcReport:
    logs = retention.remove_logs(store.db, cutoff, now)
    purged = retention.purge_jobs(store.db, cutoff) if purge_jobs else 0
    # A live agent heartbeats every second; never forget one heard from within two leases,
    # whatever the cutoff.
    nodes = retention.remove_nodes(store.db, min(cutoff, now - 2 * lease_seconds))
    removed = freed = 0
    old = artifacts.blobs_older_than(cutoff)
    while chunk := list(islice(old, _DIGEST_BATCH)):
        for digest in retention.unreferenced(store.db, chunk):
            size = artifacts.remove_if_older(digest, cutoff)
            if size:
                store.forget_blob(digest)
                removed += 1
                freed += size
    return GcReport(
        cutoff=cutoff,
        jobs_logs_removed=logs,
        jobs_purged=purged,
        nodes_removed=nodes,
        artifacts_removed=removed,
        bytes_freed=freed,
    )
