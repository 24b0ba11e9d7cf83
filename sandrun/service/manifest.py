"""The public sandrun API's uploads and manifests, turned into a JobSpec.

An upload is one or more files: `.tar.gz` / `.tgz` / `.tar` and `.zip` archives are
unpacked (plain files and directories only, relative paths; one shared top directory is
stripped), other files are taken as they are. The manifest is the `manifest` form field,
else a `job.json` in the upload, else the entrypoint is found as main.py, index.js or run.sh.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from sandrun.artifacts.archives import ArchiveLimits, Budget
from sandrun.errors import ValidationError

ENTRYPOINTS = ("main.py", "index.js", "run.sh")
BY_SUFFIX = {".py": "python3", ".js": "node", ".sh": "bash", ".rb": "ruby", ".pl": "perl"}
INTERPRETERS = ("python3", "python", "node", "bash", "sh", "ruby", "perl")
# Named, cached Python environments. `default` is the agent's own Python (with sandrun and
# cloudpickle); operators add more by showing a venv to jobs (`agent --sandbox-ro`).
ENVIRONMENTS = {"default": "the agent's own Python"}
MAX_UPLOAD = 100 << 20
LIMITS = ArchiveLimits(max_bytes=MAX_UPLOAD)
_CHUNK = 1 << 20
DEPS = ".sandrun/deps"


class Gpu(BaseModel):
    model_config = ConfigDict(extra="ignore")

    required: bool = False
    min_vram_gb: float | None = Field(default=None, gt=0)
    cuda_version: str | None = None
    compute_capability: str | None = None


class Manifest(BaseModel):
    # Clients in the wild may send fields this server does not know: they are ignored.
    model_config = ConfigDict(extra="ignore")

    entrypoint: str | None = None
    interpreter: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    outputs: list[str] = []
    requirements: str | None = None
    environment: str | None = None
    timeout: float = Field(default=300, gt=0, le=7 * 86400)
    memory_mb: int = Field(default=512, ge=1)
    cpu_seconds: float | None = Field(default=None, gt=0)
    gpu: Gpu | None = None


def unpack(uploads: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """The uploaded files as {relative path: content}; archives are read under one budget
    (MAX_UPLOAD unpacked in all, a member count and a compression ratio), checked as each
    member comes out, so a bomb is refused having cost at most that much memory."""
    budget = Budget(LIMITS, sum(len(data) for _, data in uploads), "the upload")
    tree: dict[str, bytes] = {}
    for name, data in uploads:
        lower = name.lower()
        if lower.endswith((".tar.gz", ".tgz", ".tar")):
            tree.update(_strip_top(_from_tar(name, data, budget)))
        elif lower.endswith(".zip"):
            tree.update(_strip_top(_from_zip(name, data, budget)))
        else:
            budget.member()
            budget.take(len(data))
            tree[_safe(PurePosixPath(name).name or "file", name)] = data
    if not tree:
        raise ValidationError("the upload holds no files", field="files")
    return tree


def read_manifest(text: str | None, tree: dict[str, bytes]) -> Manifest:
    source = "manifest"
    if text is None and "job.json" in tree:
        text, source = tree["job.json"].decode(errors="replace"), "job.json"
    try:
        data: Any = json.loads(text) if text is not None else {}
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source} must be a JSON object")
    try:
        return Manifest.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ValidationError(f"{source}: {field}: {first['msg']}", field=field) from None


def job_fields(
    manifest: Manifest, tree: dict[str, bytes], named: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The JobSpec fields (all but the code bundle) for this manifest and upload; `named`:
    the owner's environments (`sandrun env create`), which `environment` may name too."""
    entry, interpreter = _entry_and_interpreter(manifest, tree, named)
    program = shlex.join([interpreter, entry, *manifest.args])
    if manifest.environment in ENVIRONMENTS and interpreter.startswith("python"):
        program = '"$SANDRUN_PYTHON" ' + shlex.join([entry, *manifest.args])
    env = dict(manifest.env)
    network = False
    if manifest.requirements is not None:
        requirements = _safe(manifest.requirements, "requirements")
        if requirements not in tree:
            raise ValidationError(
                f"requirements {requirements!r} is not among the uploaded files",
                field="requirements",
            )
        pip = shlex.join(["python3", "-m", "pip", "install", "--quiet", "--target", DEPS])
        program = f"{pip} -r {shlex.quote(requirements)} && exec {program}"
        env["PYTHONPATH"] = DEPS
        network = True  # pip needs the index
    fields: dict[str, Any] = {
        "name": PurePosixPath(entry).stem.replace(".", "_") or "job",
        "shell": f"exec {program}" if manifest.requirements is None else program,
        "env": env,
        "network": network,
        "outputs": manifest.outputs or ["*"],
        "timeout": manifest.timeout,
        "memory": manifest.memory_mb,
        "labels": {"api": "public", "interpreter": interpreter.replace(" ", "_")},
    }
    if manifest.environment is not None:
        fields["labels"]["environment"] = manifest.environment
        if manifest.environment not in ENVIRONMENTS:  # a named one: its python comes first
            fields["environment"] = manifest.environment
    if manifest.cpu_seconds is not None:
        fields["limits"] = {"cpu_time": manifest.cpu_seconds}
    if manifest.gpu is not None and manifest.gpu.required:
        gpus: dict[str, Any] = {"count": 1}
        if manifest.gpu.min_vram_gb is not None:
            gpus["memory_gb"] = manifest.gpu.min_vram_gb
        fields["gpus"] = gpus
        # Kept with the job; matching them to nodes' GPUs needs GPU detection (resources).
        for key in ("cuda_version", "compute_capability"):
            if (value := getattr(manifest.gpu, key)) is not None:
                fields["labels"][key] = value
    return fields


def _entry_and_interpreter(
    manifest: Manifest, tree: dict[str, bytes], named: frozenset[str]
) -> tuple[str, str]:
    """The file to run and what runs it, checked against the upload and this server."""
    entry = manifest.entrypoint or next((e for e in ENTRYPOINTS if e in tree), None)
    if entry is None:
        raise ValidationError(
            "no entrypoint: name one in the manifest, or upload a main.py, index.js or run.sh",
            field="entrypoint",
        )
    entry = _safe(entry, "entrypoint")
    if entry not in tree:
        raise ValidationError(
            f"entrypoint {entry!r} is not among the uploaded files", field="entrypoint"
        )
    interpreter = manifest.interpreter or BY_SUFFIX.get(PurePosixPath(entry).suffix)
    if interpreter is None or interpreter not in INTERPRETERS:
        raise ValidationError(
            f"interpreter {interpreter!r} is not one this server runs; use one of "
            + ", ".join(INTERPRETERS),
            field="interpreter",
        )
    known = {*ENVIRONMENTS, *named}
    if manifest.environment is not None and manifest.environment not in known:
        raise ValidationError(
            f"environment {manifest.environment!r} does not exist; this server has "
            + ", ".join(sorted(known)),
            field="environment",
        )
    return entry, interpreter


def _from_tar(name: str, data: bytes, budget: Budget) -> dict[str, bytes]:
    out = {}
    try:
        # A stream ("r|*"): members are met one by one, never all listed first.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ValidationError(f"{name}: {member.name!r} is not a plain file")
                budget.member(member.size)
                handle = tar.extractfile(member)
                assert handle is not None
                out[_safe(member.name, name)] = _read(handle, budget)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValidationError(
            f"{name} is not a readable tar archive: {exc}", field="files"
        ) from None
    return out


def _from_zip(name: str, data: bytes, budget: Budget) -> dict[str, bytes]:
    out = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                budget.member(info.file_size)  # what it claims; what it holds is counted too
                with archive.open(info) as handle:
                    out[_safe(info.filename, name)] = _read(handle, budget)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise ValidationError(
            f"{name} is not a readable zip archive: {exc}", field="files"
        ) from None
    return out


def _read(handle: IO[bytes], budget: Budget) -> bytes:
    parts = []
    while chunk := handle.read(_CHUNK):
        budget.take(len(chunk))
        parts.append(chunk)
    return b"".join(parts)


def _strip_top(tree: dict[str, bytes]) -> dict[str, bytes]:
    """project/main.py -> main.py, when everything sits in one top directory."""
    tops = {path.split("/", 1)[0] for path in tree}
    if len(tops) == 1 and all("/" in path for path in tree):
        return {path.split("/", 1)[1]: data for path, data in tree.items()}
    return tree


def _safe(path: str, where: str) -> str:
    clean = PurePosixPath(path.removeprefix("./"))
    if clean.is_absolute() or ".." in clean.parts or not clean.parts:
        raise ValidationError(f"{where}: {path!r} is not a relative path inside the upload")
    return clean.as_posix()
