"""Errors of volumes, secrets and environments (docs/data.md)."""

from __future__ import annotations

from sandrun.errors import SandrunError


class VolumeNotFound(SandrunError):
    """No volume of yours has that name or id."""

    code = "volume_not_found"
    http_status = 404


class VolumeConflict(SandrunError):
    """That conflicts with a volume as it is: its name is taken, or a job writes it."""

    code = "volume_conflict"
    http_status = 409


class SecretNotFound(SandrunError):
    """No secret of yours has that name."""

    code = "secret_not_found"
    http_status = 404


class EnvironmentNotFound(SandrunError):
    """No environment of yours has that name."""

    code = "environment_not_found"
    http_status = 404
