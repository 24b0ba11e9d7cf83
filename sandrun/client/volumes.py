"""What is in a volume, and copying files in and out: each is a small job mounting the
volume, run where its bytes live (a node-local volume is reachable only through its node),
under the same ownership checks, sandbox and writer rule as any job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandrun.errors import ValidationError

if TYPE_CHECKING:
    from sandrun.client.client import Client
    from sandrun.client.job import Job

_LABEL = "sandrun.volume"
_TIMEOUT = 3600.0
_KINDS = {"f": "file", "d": "dir", "l": "link"}


@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir" or "link"
    size: int
    path: str  # relative to the volume (or to the path listed)


def list_volume(client: Client, name: str, path: str = "") -> list[Entry]:
    """Everything under `path` in the volume, recursively."""
    where = _inside(name, path)
    job = _run(client, name, "ls", True, command=["find", where, "-mindepth", "1", "-printf",
               "%y %s %P\\n"])  # fmt: skip
    entries = []
    for line in job.log_text("stdout").splitlines():
        kind, size, rel = line.split(" ", 2)
        entries.append(Entry(_KINDS.get(kind, kind), int(size), rel))
    return entries


def put(client: Client, name: str, local: Path, path: str = "") -> Job:
    """Copy a local file or directory into the volume at `path` (default: its name, at the
    volume's top)."""
    if not local.exists():
        raise ValidationError(f"{local} does not exist", field="local")
    target = _inside(name, path or local.name)
    if local.is_dir():
        code = client.upload_directory(local)
        script = 'mkdir -p "$1" && cp -a . "$1"/'
        return _run(client, name, "put", False, code=code, shell_args=(script, target))
    digest = client.transport.put_blob(local.read_bytes())
    script = 'mkdir -p "$(dirname "$1")" && cp .sandrun-put "$1"'
    inputs = {".sandrun-put": digest}
    return _run(client, name, "put", False, inputs=inputs, shell_args=(script, target))


def get(client: Client, name: str, path: str, dest: Path) -> list[Path]:
    """Copy a file or directory of the volume to `dest` (a directory, made if missing)."""
    source = _inside(name, path)
    script = 'mkdir -p out && cp -a "$1" out/'
    job = _run(client, name, "get", True, shell_args=(script, source), outputs=["out/**"])
    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for output in job.outputs:
        rel = PurePosixPath(output.path).relative_to("out")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(job.read_bytes(output.path))
        got.append(target)
    return got


def _inside(name: str, path: str) -> str:
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        raise ValidationError(
            f"path {path!r} must be relative to the volume's top, without '..'", field="path"
        )
    return str(PurePosixPath("/volumes", name, *parts))


def _run(client: Client, name: str, verb: str, read_only: bool, **how: Any) -> Job:
    fields: dict[str, Any] = {
        "name": f"volume-{verb}-{name}"[:128],
        "volumes": [{"name": name, "read_only": read_only}],
        "labels": {_LABEL: name},
        "timeout": _TIMEOUT,
        "outputs": how.get("outputs", []),
        "inputs": how.get("inputs", {}),
    }
    if "command" in how:
        fields["command"] = how["command"]
    else:
        script, arg = how["shell_args"]
        fields["command"] = ["sh", "-c", script, "sh", arg]
    if how.get("code"):
        fields["code"] = how["code"]
    return client.submit(fields).wait(check=True)
