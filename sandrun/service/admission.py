"""What a submit checks beyond the spec's own validation: that the job may run here at all
(host paths, this server's maxima, its owner's limits) and that the blobs it brings were
uploaded by its owner. Each check raises the error a user sees, naming the field."""

from __future__ import annotations

from collections.abc import Callable

from sandrun.errors import (
    ArtifactNotFound,
    HostPathRefused,
    JobNotFoundError,
    NoCheckpoint,
    OverMaximum,
    OverOwnerLimit,
    SandrunError,
)
from sandrun.models import JobRecord
from sandrun.service import maxima
from sandrun.spec import JobSpec
from sandrun.spec.policy import Policy


def check_host_paths(spec: JobSpec, allowed: bool) -> None:
    """A server's jobs run only in what they bring: a path on the node is refused."""
    if spec.working_dir is not None and not allowed:
        raise HostPathRefused(
            f"working_dir {spec.working_dir!r} names a directory on the node; a server's "
            "jobs run only in what they bring",
            field="working_dir",
            suggestions=[
                "drop working_dir: `sandrun run` and the SDK upload the current directory",
                "or bring the files as code, inputs or a repository",
            ],
        )


def check_inputs(spec: JobSpec, visible: Callable[[str], bool]) -> None:
    """Every blob a job brings must be uploaded (by its owner) before it is submitted."""
    named = {f"inputs.{path}": digest for path, digest in spec.inputs.items()}
    if spec.code:
        named["code"] = spec.code
    for i, mount in enumerate(spec.data_mounts):
        if mount.digest is not None:
            named[f"data_mounts.{i}.source"] = mount.digest
    for field, digest in named.items():
        if not visible(digest):
            raise ArtifactNotFound(
                f"{field}: nothing was uploaded with digest {digest}",
                field=field,
                suggestions=["upload it first (POST /v1/artifacts), then submit"],
            )


def check_after(
    spec: JobSpec,
    viewer: str | None,
    lookup: Callable[[list[str]], tuple[object, dict[str, str]]],
) -> None:
    """Every job in `after` must exist and be the submitter's (`viewer`; None: an admin):
    another tenant's job reads as absent, so waiting on it tells nothing about it."""
    ids = [job_id for job_id, _ in spec.dependencies]
    if not ids:
        return
    _, owners = lookup(ids)
    for job_id in ids:
        if job_id not in owners or (viewer is not None and owners[job_id] != viewer):
            raise JobNotFoundError(
                f"after: no job has id {job_id!r}",
                field="after",
                suggestions=["name a job you submitted: `sandrun list` shows their ids"],
            )


def check_maxima(spec: JobSpec, policy: Policy) -> None:
    """Refuse a job that asks for more than this server lets one job have."""
    first = next(maxima.over(spec, policy.maxima), None)
    if first is not None:
        field, asked, most, unit = first
        raise OverMaximum(
            f"{field}: {asked:g}{unit} is over this server's maximum of {most:g}{unit}",
            field=field,
            suggestions=[f"ask for at most {most:g}{unit}, or ask an admin to raise it"],
        )


def check_limits(spec: JobSpec, owner: str, policy: Policy) -> None:
    """Refuse a job its owner's limits would keep waiting forever."""
    limits = policy.limits_for(owner)
    gpus = spec.gpus.count if spec.gpus else 0
    if limits.max_running_jobs == 0:
        raise OverOwnerLimit(
            f"{owner} may not run jobs on this server (max_running_jobs 0)", field="owner"
        )
    if limits.max_gpus is not None and gpus > limits.max_gpus:
        raise OverOwnerLimit(
            f"gpus: the job needs {gpus} GPUs; this server lets {owner} hold at most "
            f"{limits.max_gpus} at once (max_gpus)",
            field="gpus",
            suggestions=[f"ask for at most {limits.max_gpus}, or ask an admin to raise it"],
        )


def in_batch(exc: SandrunError, index: int) -> SandrunError:
    """The same error, naming the batch entry it is about."""
    return under(exc, f"jobs.{index}")


def under(exc: SandrunError, where: str) -> SandrunError:
    """The same error, about the part of a request at `where` (`jobs.2`, `steps.train`)."""
    return type(exc)(
        f"{where}: {exc.message}",
        field=f"{where}.{exc.field}" if exc.field else where,
        suggestions=exc.suggestions,
    )


def check_restore_from(spec: JobSpec, owner: str, get: Callable[[str], JobRecord]) -> None:
    """`restore_from` must name a job of the same owner (another's reads as absent) that
    has a checkpoint. The store checks again as it records the job (store/lifecycle.py)."""
    if spec.restore_from is None:
        return
    try:
        source: JobRecord | None = get(spec.restore_from)
    except JobNotFoundError:
        source = None
    if source is None or source.owner != owner:
        raise JobNotFoundError(
            f"restore_from: no job has id {spec.restore_from!r}", field="restore_from"
        )
    if source.checkpoint is None:
        raise NoCheckpoint(
            f"job {source.id} has no checkpoint to restore from (yet)",
            field="restore_from",
            suggestions=["`sandrun checkpoints JOB_ID` lists a job's checkpoints"],
        )
