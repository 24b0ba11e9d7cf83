"""An attempt's scratch directory: what a job brings into it before it runs (a git
checkout, an uploaded code bundle (.tar.gz), uploaded files — all by digest, fetched
through the control plane into the agent's artifact store, which is also its cache), and
its removal at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from sandrun.agent.control import ControlPlane
from sandrun.agent.gitcache import GitCache
from sandrun.artifacts import LocalArtifactStore
from sandrun.artifacts.archives import ArchiveLimits, Budget
from sandrun.errors import ArchiveTooLarge, BadBundle, BadInput
from sandrun.spec import JobSpec

# What one code bundle may unpack to on an agent's disk.
BUNDLE_LIMITS = ArchiveLimits(max_bytes=10 << 30, max_members=200_000, max_ratio=1000.0)


def materialize(
    spec: JobSpec,
    workdir: Path,
    control: ControlPlane,
    artifacts: LocalArtifactStore,
    repos: GitCache,
) -> str | None:
    """Fill `workdir` (empty, the attempt's own) with what the spec brings; return the
    commit checked out for a repository job."""
    commit = None
    if spec.repository is not None:
        commit = repos.checkout(spec.repository.url, spec.repository.ref, workdir)
    if spec.code is not None:
        control.fetch_artifact(spec.code)
        unpack(artifacts.path(spec.code), workdir)
    root = workdir.resolve()
    for rel, digest in spec.inputs.items():
        control.fetch_artifact(digest)
        target = workdir / rel
        # A checked-out repository may hold symlinks: never write (or mkdir) through one.
        if target.is_symlink() or not target.parent.resolve().is_relative_to(root):
            raise BadInput(f"input {rel!r} would be written outside the working directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(artifacts.read_bytes(digest))
    return commit


def unpack(bundle: Path, dest: Path, what: str = "the code bundle") -> None:
    """Unpack a tar (gzipped or not) of plain files and directories into `dest`, within
    BUNDLE_LIMITS."""
    budget = Budget(BUNDLE_LIMITS, bundle.stat().st_size, what)
    try:
        # A stream: each member is checked (and counted) before it is written.
        with tarfile.open(bundle, "r|*") as tar:  # gzipped (a code bundle) or not
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    not (member.isfile() or member.isdir())
                    or member.name.startswith("/")
                    or ".." in parts
                ):
                    raise BadBundle(f"{what}: entry {member.name!r} is not a plain relative file")
                budget.member(member.size)
                budget.take(member.size)
                member.mode = (member.mode & 0o755) | 0o644 if member.isfile() else 0o755
                # Checked above; Python >= 3.11.4 checks again (its "data" filter).
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extract(member, dest, **safe)  # type: ignore[arg-type]
    except ArchiveTooLarge as exc:
        raise BadBundle(exc.message) from None
    except (tarfile.TarError, OSError) as exc:
        raise BadBundle(f"cannot unpack {what}: {exc}") from None


def remove_tree(path: Path) -> None:
    """Remove an attempt's directory, whatever modes the job left on what it made."""
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for parent, dirs, _ in os.walk(path):  # a job may have left itself unreadable dirs
        for name in dirs:
            inner = os.path.join(parent, name)
            if not os.path.islink(inner):
                with contextlib.suppress(OSError):
                    os.chmod(inner, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def sweep_runs(runs: Path, ended_before: float, in_use: Callable[[str], bool]) -> None:
    """Remove what attempts left in `runs` (kept scratch, a crash's leftovers) that changed
    last before `ended_before`, but no running attempt's record (.pid) nor what is `in_use`."""
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(".pid") or in_use(entry.name):
            continue
        try:
            ended = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if ended < ended_before:
            remove_tree(Path(entry.path))
