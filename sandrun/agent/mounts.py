"""What an attempt's data adds to its sandbox: the volumes it mounts, and its secrets as
environment variables or read-only files.

A volume's bytes are a directory under the agent's `volumes/` (hidden from every job,
like the rest of its state), shown at the volume's path inside. Secret files are written
for the attempt alone, in a directory beside its scratch that goes when it ends (never
kept with a failed attempt's scratch).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandrun.agent.diskwatch import DiskWatch, Watched, allocated_bytes
from sandrun.agent.envbuild import Builder, BuildFailed, runner_path
from sandrun.agent.fetch import Fetcher, FetchError
from sandrun.agent.logsink import END_LOGS
from sandrun.agent.sandbox.view import Mount
from sandrun.agent.workspace import remove_tree
from sandrun.data_models import VolumeGrant
from sandrun.models import AttemptResult, Claim, LogChunk
from sandrun.runner import CALL_ENV
from sandrun.spec.environment import Environment
from sandrun.states import FailureReason


@dataclass
class Data:
    """One attempt's volumes and secrets, ready for its sandbox."""

    binds: tuple[Mount, ...] = ()
    owned: tuple[Path, ...] = ()  # what the attempt's uid must own: volumes, secret files
    env: dict[str, str] = field(default_factory=dict)
    build_log: bytes = b""  # what building its environment printed, for its logs
    written: list[tuple[VolumeGrant, Path]] = field(default_factory=list)  # rw volumes
    secrets_dir: Path | None = None


class DataError(Exception):
    """The attempt cannot have its data (the message says why): it fails to start, with
    `reason` (spawn_error unless a data mount or its environment failed), and `log` (what
    building its environment printed) for its logs."""

    def __init__(
        self, message: str, reason: FailureReason = FailureReason.SPAWN_ERROR, log: bytes = b""
    ) -> None:
        super().__init__(message)
        self.reason, self.log = reason, log


@dataclass(frozen=True)
class Sources:
    """Where an agent keeps what attempts mount: volumes' bytes, secret files (per
    attempt), fetched data, built environments."""

    volumes: Path
    secrets: Path
    fetcher: Fetcher
    builder: Builder


def volume_dir(volumes_root: Path, grant: VolumeGrant) -> Path:
    return volumes_root / grant.id


def prepare(
    claim: Claim, name: str, sources: Sources, isolates: bool, env: dict[str, str], workdir: Path
) -> Data:
    """The attempt `name`'s data; `env` is its environment so far (its PATH, say)."""
    spec, data = claim.job.spec, Data()
    volumes_root, secrets_dir = sources.volumes, sources.secrets / name
    granted = {g.name for g in claim.volumes} | {g.id for g in claim.volumes}
    for mount in spec.volumes:
        if (mount.name or mount.volume_id) not in granted:
            raise DataError(
                f"volume {mount.name or mount.volume_id!r} was not granted to this attempt "
                "(only jobs submitted alone or with `after` mount volumes)"
            )
    files = [s for s in spec.secrets if s.file]
    if (claim.volumes or files or spec.data_mounts) and not isolates:
        raise DataError(
            "volumes, data mounts and secret files need a sandbox that isolates (bwrap or "
            "unshare); this agent runs jobs with none"
        )
    shared: list[Mount] = []  # what many attempts see: fetched data, environments
    for wanted in spec.data_mounts:
        try:
            fetched = sources.fetcher.fetch(wanted, claim.secrets)
            shared.append(Mount("ro", wanted.target, str(fetched)))
        except FetchError as exc:
            raise DataError(str(exc), FailureReason.DATA_ERROR) from None
    if spec.environment is not None:
        shared += _environment(claim, sources.builder, env, workdir, data)
    binds: list[Mount] = []  # what is the attempt's own: its volumes, its secret files
    for grant in claim.volumes:
        where = volume_dir(volumes_root, grant)
        where.mkdir(parents=True, exist_ok=True)
        binds.append(Mount("ro" if grant.read_only else "rw", grant.target, str(where)))
        if not grant.read_only:
            data.written.append((grant, where))
    for secret in spec.secrets:
        value = claim.secrets.get(secret.name)
        if value is None:
            raise DataError(
                f"secret {secret.name!r} was not delivered: it was deleted since the job was "
                "submitted, or this server cannot open it (do all servers share one "
                "SANDRUN_SECRETS_KEY?)"
            )
        if secret.env_name:
            data.env[secret.env_name] = value
        if secret.file:
            secrets_dir.parent.mkdir(mode=0o700, exist_ok=True)
            secrets_dir.mkdir(mode=0o700, exist_ok=True)
            data.secrets_dir = secrets_dir
            path = secrets_dir / secret.name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            with os.fdopen(fd, "w") as out:
                out.write(value)
            binds.append(Mount("ro", secret.file, str(path)))
    data.binds = tuple([*shared, *binds] if isolates else ())  # none: seen where they are
    data.owned = tuple(Path(b.source) for b in binds)
    return data


def _environment(
    claim: Claim, builder: Builder, env: dict[str, str], workdir: Path, data: Data
) -> list[Mount]:
    """Build (or find) the job's environment: its Python first on PATH, and function calls
    run on it. The mounts that show it (at its own path, so its scripts' paths hold)."""
    spec = claim.job.spec
    named = spec.environment if isinstance(spec.environment, str) else None
    wanted = claim.environment if named else spec.environment
    if not isinstance(wanted, Environment):
        raise DataError(
            f"environment {named!r} was deleted after the job was submitted",
            FailureReason.ENVIRONMENT_ERROR,
        )
    calls = CALL_ENV in spec.env
    try:
        built = builder.ready(wanted, workdir, calls)
    except BuildFailed as exc:
        raise DataError(f"environment: {exc}", FailureReason.ENVIRONMENT_ERROR, exc.log) from None
    data.build_log = built.log
    data.env.update(PATH=f"{built.root}/bin:{env.get('PATH', '')}", VIRTUAL_ENV=str(built.root))
    mounts = [Mount("ro", str(built.root), str(built.root))]
    if calls:
        runner = runner_path(builder.root)
        data.env.update(SANDRUN_PYTHON=str(built.python), PYTHONPATH=str(runner))
        mounts.append(Mount("ro", str(runner), str(runner)))
    return mounts


@contextlib.contextmanager
def watched(disks: DiskWatch, data: Data) -> Iterator[list[Watched]]:
    """Each volume the attempt writes, under watch against its size while it runs."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(disks.watch(w, g.size_mb << 20)) for g, w in data.written]


# Ends a volume written past its size reads as (the job may have failed of it first).
_MAY_BE_FULL = (None, FailureReason.EXIT_CODE, FailureReason.SIGNALED, FailureReason.VOLUME_FULL)


def checked(data: Data, result: AttemptResult) -> AttemptResult:
    """`result`, failed `volume_full` if the attempt wrote a volume past its size: each is
    measured once more at its end, so a job quicker than the watch is caught too."""
    if result.failure_reason not in _MAY_BE_FULL:
        return result
    for grant, where in data.written:
        used = allocated_bytes(where)
        if used > grant.size_mb << 20:
            return result.model_copy(
                update={
                    "failure_reason": FailureReason.VOLUME_FULL,
                    "message": f"volume {grant.name!r} holds {used >> 20} MiB, over its size "
                    f"of {grant.size_mb} MiB: what was written stays; remove some to write "
                    "to it again",
                }
            )
    return result


def finish(claim: Claim, volumes_root: Path, secrets_dir: Path) -> None:
    """After the attempt: its secret files go, and a deleted volume's bytes with them."""
    if secrets_dir.exists():
        remove_tree(secrets_dir)
    for grant in claim.volumes:
        if grant.deleted:
            remove_tree(volume_dir(volumes_root, grant))


def log_chunks(claim: Claim, log: bytes) -> list[LogChunk]:
    """A failed build's output as the attempt's logs (sent with its end: its last 256 KiB)."""
    if not log:
        return []
    tail = log[-END_LOGS:]
    return [LogChunk(attempt=claim.attempt, seq=1, stream="stderr", data=tail, at=time.time())]
