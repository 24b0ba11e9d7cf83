"""What a job brings besides its code: volumes it mounts and secrets it is given.

Both name paths *inside* the sandbox (never on the node): a volume's `mount_path` and a
secret's `file`. Such a path is absolute, plain (letters, digits, `._@+-`; no `.` or `..`
part) and outside the system directories the view shows read-only, so no mount can shadow
a program the job runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from sandrun.spec.base import Strict
from sandrun.spec.fields import ENV_KEY_RE, NAME_RE, Digest, also_accepts
from sandrun.spec.text import forbid_nul_in_schema

RESERVED: tuple[str, ...] = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
RESERVED += ("opt", "proc", "dev", "sys", "tmp", "run/sandrun", ".sandrun")
_PART = r"/(?!\.\.?(?:/|$))[A-Za-z0-9._@+-]+"
MOUNT_PATH = rf"^(?!/(?:{'|'.join(re.escape(r) for r in RESERVED)})(?:/|$))(?:{_PART})+$"
MOUNT_PATH_RE = re.compile(MOUNT_PATH)
VOLUME_ID = r"^vol-[A-Za-z0-9_-]{1,64}$"
SECRET_NAME = ENV_KEY_RE.pattern.replace("*$", "{0,127}$")
NODE_LABEL = "sandrun/node"  # every node has its own name as this label
MAX_MOUNTS = 16  # volumes a job may mount; secrets it may name


def check_mount_path(value: str, what: str) -> str:
    if not MOUNT_PATH_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be an absolute path inside the sandbox of plain parts "
            "(letters, digits, '._@+-'; no '.' or '..'), not in "
            + ", ".join("/" + r for r in RESERVED)
            + "; e.g. /volumes/data or /run/secrets/key"
        )
    return value


def _name_only(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


def _one_of_name_or_id(schema: dict[str, Any]) -> None:
    forbid_nul_in_schema(schema)
    schema["anyOf"] = [
        {"required": [given], "properties": {given: {"type": "string"}, other: {"type": "null"}}}
        for given, other in (("name", "volume_id"), ("volume_id", "name"))
    ]


class VolumeMount(Strict):
    """A volume the job mounts: by `name` (its owner's) or `volume_id`, at
    `/volumes/<name>` unless `mount_path` says where."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_one_of_name_or_id)

    name: str | None = Field(default=None, json_schema_extra={"pattern": NAME_RE.pattern})
    volume_id: str | None = Field(default=None, json_schema_extra={"pattern": VOLUME_ID})
    mount_path: str | None = Field(default=None, json_schema_extra={"pattern": MOUNT_PATH})
    read_only: StrictBool = False

    @model_validator(mode="after")
    def _check(self) -> VolumeMount:
        if (self.name is None) == (self.volume_id is None):
            raise ValueError("give a volume's name or its volume_id (one of them)")
        if self.name is not None and not NAME_RE.match(self.name):
            raise ValueError(
                f"volume name {self.name!r} is not valid; use 1-128 letters, digits, '-' or '_'"
            )
        if self.volume_id is not None and not re.match(VOLUME_ID, self.volume_id):
            raise ValueError(f"volume_id {self.volume_id!r} is not a volume id (vol-...)")
        if self.mount_path is not None:
            check_mount_path(self.mount_path, "mount_path")
        return self

    def target(self, name: str) -> str:
        """Where it appears inside, for the volume called `name`."""
        return self.mount_path or f"/volumes/{name}"


class SecretRef(Strict):
    """A secret the job is given: as the environment variable `env` (its name unless a
    `file` is given), and/or as a read-only `file`."""

    name: str = Field(json_schema_extra={"pattern": SECRET_NAME})
    env: str | None = Field(default=None, json_schema_extra={"pattern": ENV_KEY_RE.pattern})
    file: str | None = Field(default=None, json_schema_extra={"pattern": MOUNT_PATH})

    @model_validator(mode="after")
    def _check(self) -> SecretRef:
        if not re.match(SECRET_NAME, self.name):
            raise ValueError(
                f"secret name {self.name!r} is not valid; use letters, digits "
                "and '_', not starting with a digit (at most 128)"
            )
        if self.env is not None and not ENV_KEY_RE.match(self.env):
            raise ValueError(f"env {self.env!r} is not a valid environment variable name")
        if self.file is not None:
            check_mount_path(self.file, "file")
        return self

    @property
    def env_name(self) -> str | None:
        return self.env if self.env is not None or self.file else self.name


VolumeItem = Annotated[
    VolumeMount,
    BeforeValidator(_name_only),
    Field(json_schema_extra=also_accepts({"type": "string", "pattern": NAME_RE.pattern})),
]
SecretItem = Annotated[
    SecretRef,
    BeforeValidator(_name_only),
    Field(json_schema_extra=also_accepts({"type": "string", "pattern": SECRET_NAME})),
]


# An https:// or http:// URL, an S3 bucket (and a prefix), or a blob of this server.
# (Blanks spelled out: Python's \s also takes \x1c-\x1f, a JSON Schema's does not.)
_URL_TAIL = r"[^ \t\n\r\f\v\x00]"
DATA_SOURCE = (
    rf"^(?:https?://{_URL_TAIL}+|s3://[a-z0-9][a-z0-9.-]{{1,62}}(?:/{_URL_TAIL}*)?"
    r"|artifact:(?:sha256:)?[0-9a-f]{64})$"
)
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


class DataMount(Strict):
    """Data the agent fetches once, keeps by content and shows read-only at `target`: a
    file, or a directory (an S3 prefix, or a tar or zip archive unpacked)."""

    source: str = Field(json_schema_extra={"pattern": DATA_SOURCE})
    target: str = Field(json_schema_extra={"pattern": MOUNT_PATH})
    sha256: Digest | None = None  # what the fetched bytes must hash to
    # Default: a source named like an archive is unpacked (an s3:// prefix is a directory).
    unpack: StrictBool | None = None

    @model_validator(mode="after")
    def _check(self) -> DataMount:
        if not re.match(DATA_SOURCE, self.source):
            raise ValueError(
                f"source {self.source[:80]!r} is not https://..., s3://BUCKET/PREFIX or "
                "artifact:SHA256"
            )
        check_mount_path(self.target, "target")
        return self

    @property
    def digest(self) -> str | None:
        """The blob an artifact: source names."""
        if not self.source.startswith("artifact:"):
            return None
        return self.source.removeprefix("artifact:").removeprefix("sha256:")

    @property
    def unpacks(self) -> bool:
        if self.unpack is not None:
            return self.unpack
        path = self.source.split("?", 1)[0].lower()
        return not path.startswith("s3://") and path.endswith(ARCHIVES)


def check_targets(
    volumes: list[VolumeMount], secrets: list[SecretRef], data: Sequence[DataMount] = ()
) -> None:
    """No two different mounts at one path, nor one inside another (the same mount given
    twice is one; a secret named twice is given once, a later env name winning)."""
    mounts: dict[str, object] = {}
    for v in volumes:
        _claim_path(mounts, v.target(v.name or v.volume_id or ""), ("volume", v.name,
                    v.volume_id, v.read_only))  # fmt: skip
    for s in secrets:
        if s.file:
            _claim_path(mounts, s.file, ("secret", s.name))
    for d in data:
        _claim_path(mounts, d.target, ("data", d.source, d.sha256, d.unpacks))


def _claim_path(mounts: dict[str, object], path: str, what: object) -> None:
    for other, was in mounts.items():
        same = path == other
        if (same and was != what) or path.startswith(other + "/") or other.startswith(path + "/"):
            raise ValueError(f"two mounts at {other!r} and {path!r}: give each its own path")
    mounts[path] = what
