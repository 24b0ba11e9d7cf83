"""The data API: volumes, environments and secrets. Thin routes over the service (docs/data.md).

A secret's value goes in (PUT) and never comes out: listing shows names and dates.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sandrun.data_models import (
    EnvironmentCreate,
    NamedEnvironment,
    SecretInfo,
    SecretValue,
    Volume,
    VolumeCreate,
)
from sandrun.models import Principal
from sandrun.server.auth import ERRORS, ServiceDep, UserDep, viewer
from sandrun.server.params import Text
from sandrun.spec.data import SECRET_NAME

router = APIRouter(prefix="/v1", responses=ERRORS)
SecretName = Annotated[str, Path(pattern=SECRET_NAME, max_length=128)]


@router.post("/volumes", status_code=status.HTTP_201_CREATED)
def create_volume(body: VolumeCreate, caller: UserDep, service: ServiceDep) -> Volume:
    """Create a named volume of the caller's, `size` MiB (or "100GB"), shared or not."""
    return service.create_volume(caller.name, body.name, body.size, body.shared)


@router.get("/volumes")
def list_volumes(caller: UserDep, service: ServiceDep) -> list[Volume]:
    """The caller's volumes (an admin's: everyone's)."""
    return service.list_volumes(viewer(caller))


@router.get("/volumes/{key}")
def get_volume(key: Text, caller: UserDep, service: ServiceDep) -> Volume:
    """One of the caller's volumes, by name or id."""
    return service.get_volume(key, _owner(key, caller))


@router.delete("/volumes/{key}")
def delete_volume(key: Text, caller: UserDep, service: ServiceDep) -> Volume:
    """Delete a volume no unfinished job mounts; its bytes go from its node."""
    return service.delete_volume(key, _owner(key, caller))


@router.post("/environments", status_code=status.HTTP_201_CREATED)
def create_environment(
    body: EnvironmentCreate, caller: UserDep, service: ServiceDep
) -> NamedEnvironment:
    """Name a Python version and requirements (replacing one of that name)."""
    return service.create_environment(caller.name, body.name, body.spec)


@router.get("/environments")
def list_environments(caller: UserDep, service: ServiceDep) -> list[NamedEnvironment]:
    """The caller's environments (an admin's: everyone's)."""
    return service.list_environments(viewer(caller))


@router.delete("/environments/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_environment(name: Text, caller: UserDep, service: ServiceDep) -> Response:
    service.delete_environment(caller.name, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/secrets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def set_secret(
    name: SecretName, body: SecretValue, caller: UserDep, service: ServiceDep
) -> Response:
    """Set (or replace) one of the caller's secrets."""
    service.set_secret(caller.name, name, body.value)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/secrets")
def list_secrets(caller: UserDep, service: ServiceDep) -> list[SecretInfo]:
    """The caller's secrets' names (an admin's: everyone's), never their values."""
    return service.list_secrets(viewer(caller))


@router.delete("/secrets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(name: SecretName, caller: UserDep, service: ServiceDep) -> Response:
    service.delete_secret(caller.name, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _owner(key: str, caller: Principal) -> str | None:
    """Whose volume `key` may name: a name is the caller's own; an id, any owner's for an
    admin."""
    return viewer(caller) if key.startswith("vol-") else caller.name
