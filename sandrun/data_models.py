"""Volumes and secrets on the wire: what users send and `volume list` and `secret list`
show, and what an agent is given with a claim (its volumes; its secrets travel as plain
values beside)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from sandrun.spec.environment import Environment as Environment  # re-exported: Claim uses it
from sandrun.spec.environment import Packages
from sandrun.spec.fields import NAME_RE
from sandrun.spec.units import MAX_MEMORY_MB, MEMORY_PATTERN, number_only


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Volume(Wire):
    id: str
    owner: str
    name: str
    size_mb: int
    shared: bool = False
    node: str | None = None  # the node holding its bytes, once a job has used it
    created_at: float
    in_use: int = 0  # unfinished jobs that mount it


class VolumeGrant(Wire):
    """One volume an attempt mounts, as its agent needs it."""

    id: str
    name: str
    target: str  # where it appears in the sandbox
    read_only: bool
    size_mb: int
    node: str | None = None
    deleted: bool = False  # purge its bytes once the attempt ends


class NamedEnvironment(Wire):
    owner: str
    name: str
    spec: Packages
    created_at: float


class EnvironmentCreate(Wire):
    name: str = Field(pattern=NAME_RE.pattern)
    spec: Packages


class SecretInfo(Wire):
    owner: str
    name: str
    created_at: float
    updated_at: float


class VolumeCreate(Wire):
    name: str = Field(pattern=NAME_RE.pattern)
    # MiB, or a size such as "100GB" (binary units); default 10 GiB.
    size: (
        Annotated[int, Field(ge=1, le=MAX_MEMORY_MB), BeforeValidator(number_only)]
        | Annotated[StrictStr, Field(pattern=MEMORY_PATTERN, max_length=64)]
        | None
    ) = None
    shared: StrictBool = False  # several jobs may write it at once


class SecretValue(Wire):
    value: str = Field(max_length=65536, pattern=r"^[^\x00]*$")
