"""The public API's response shapes: a job's status as its clients read it (queued |
running | completed | failed, execution metadata, output files, the signer), and an output
file's entry."""

from __future__ import annotations

import mimetypes
from typing import Any

from sandrun.models import Attempt, OutputFile
from sandrun.service import Service
from sandrun.signing import job_hash
from sandrun.states import JobState

STATES = {
    JobState.WAITING: "queued",  # for the jobs it depends on
    JobState.PENDING: "queued",
    JobState.SCHEDULED: "queued",
    JobState.RUNNING: "running",
    JobState.PAUSED: "running",  # the public API has no paused state: still in progress
    JobState.COMPLETED: "completed",
}


def status_of(service: Service, job_id: str, viewer: str | None) -> dict[str, Any]:
    job = service.get(job_id, viewer)
    attempts = service.attempts(job_id, viewer)
    last = _last_ended(attempts)
    outputs = service.outputs(job_id, viewer=viewer)
    state = STATES.get(job.state, "failed")
    usage = last.usage if last else None
    peak_mb = usage.max_rss_mb if usage else None
    return {
        "job_id": job.id,
        "status": state,
        "queue_position": service.queue_position(job) if state == "queued" else None,
        "execution_metadata": {
            "cpu_seconds": usage.cpu_seconds if usage else None,
            "memory_peak_bytes": int(peak_mb * 1024 * 1024) if peak_mb is not None else None,
            "memory_peak_mb": peak_mb,
            "wall_time_ms": int(usage.wall_seconds * 1000)
            if usage and usage.wall_seconds is not None
            else None,
            "exit_code": job.exit_code,
            "environment": job.spec.labels.get("environment"),
            "interpreter": job.spec.labels.get("interpreter"),
        },
        "job_hash": job_hash(job.spec),
        "output_files": {
            o.path: {"size_bytes": o.size, "sha256": o.digest, "type": mime_type(o.path)}
            for o in outputs
        },
        "worker_metadata": {
            "worker_id": last.worker_id if last else None,
            "signature": last.signature if last else None,
            "attempt": last.number if last else None,
            # This server's countersignature (signing.countersign_claim) and its key.
            "server_id": service.server_identity().worker_id,
            "countersignature": service.countersignature(last) if last else None,
        },
        "message": job.message,
    }


def _last_ended(attempts: list[Attempt]) -> Attempt | None:
    ended = [a for a in attempts if a.finished_at is not None]
    return ended[-1] if ended else None


def file_entry(job_id: str, out: OutputFile) -> dict[str, Any]:
    return {
        "name": out.path,
        "size": out.size,
        "size_formatted": _size(out.size),
        "type": "file",
        "mime_type": mime_type(out.path),
        "download_url": f"/download/{job_id}/{out.path}",
        "sha256": out.digest,
    }


def mime_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
