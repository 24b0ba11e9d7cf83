"""What `Client.run` accepts: a shell string, an argv list, a JobSpec, a dict, or a
TaskConfig — with Flow-style field names beside the core spec's."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic import ValidationError as PydanticValidationError

from sandrun.errors import InvalidSpec, ValidationError
from sandrun.spec import JobSpec, parse_spec
from sandrun.spec.data import SecretRef, VolumeMount
from sandrun.spec.environment import environment_fields
from sandrun.spec.gpus import gpu_request
from sandrun.spec.parse import invalid_spec_from
from sandrun.spec.units import Positive

# A volume to mount (`VolumeSpec(name="data", mount_path="/data")`, or `volume_id=`) and a
# secret to get, as TaskConfig(volumes=[...], secrets=[...]) take them.
VolumeSpec = VolumeMount
SecretSpec = SecretRef


class TaskConfig(BaseModel):
    """A job in Flow's words. Any core JobSpec field (cpus, retries, outputs...) may be
    given too; `command` may be a string (run by the shell) or an argv list."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = None
    instance_type: str | None = None  # "a100", "4xa100", "8xh100"
    min_gpu_memory_gb: Positive | None = None
    command: str | list[str] | None = None
    shell: str | None = None
    script: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    max_run_time_hours: Positive | None = None
    num_instances: int = Field(default=1, ge=1)
    upload_code: StrictBool | None = None  # default: upload unless the job brings its own
    image: str | None = None  # a named environment (sandrun runs no container images)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise invalid_spec_from(list(exc.errors())) from None

    def to_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


def to_spec(command: object, fields: dict[str, Any]) -> tuple[JobSpec, bool]:
    """The JobSpec, and whether the current directory should be uploaded as its code."""
    data = environment_fields({**_base(command), **fields})
    upload = data.pop("upload_code", None)
    if isinstance(data.get("command"), str):
        data["shell"] = data.pop("command")
    instance = data.pop("instance_type", None)
    gpu_memory = data.pop("min_gpu_memory_gb", None)
    if instance is not None or gpu_memory is not None:
        if data.get("gpus") is not None:
            raise InvalidSpec(
                "give gpus or instance_type/min_gpu_memory_gb, not both", field="instance_type"
            )
        gpus = gpu_request(instance if instance is not None else 1, field="instance_type")
        data["gpus"] = {**gpus, **({"memory_gb": gpu_memory} if gpu_memory is not None else {})}
    hours = data.pop("max_run_time_hours", None)
    if hours is not None:
        if data.get("timeout") is not None:
            raise InvalidSpec("give timeout or max_run_time_hours, not both", field="timeout")
        data["timeout"] = float(hours) * 3600
    instances = data.pop("num_instances", 1)
    if instances != 1:
        raise InvalidSpec(
            f"num_instances={instances}: multi-node jobs are not supported yet",
            field="num_instances",
            suggestions=["submit one job per instance, or use a function's .map()"],
        )
    spec = parse_spec(data)
    brings = spec.working_dir or spec.code or spec.repository
    if upload and brings:
        raise InvalidSpec(
            "upload_code cannot be used with working_dir, code or repository",
            field="upload_code",
        )
    return spec, (not brings) if upload is None else bool(upload)


def _base(command: object) -> dict[str, Any]:
    if command is None:
        return {}
    if isinstance(command, str):
        return {"shell": command}
    if isinstance(command, list):
        return {"command": command}
    if isinstance(command, JobSpec):
        return command.to_json_dict()
    if isinstance(command, TaskConfig):
        return command.to_fields()
    if isinstance(command, dict):
        return dict(command)
    raise ValidationError(
        f"cannot run a {type(command).__name__}; give a shell string, an argv list, "
        "a JobSpec, a TaskConfig or a dict",
        field="command",
    )
