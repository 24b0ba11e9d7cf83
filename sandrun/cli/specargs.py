"""Building a job spec from `sandrun run`/`submit` arguments and an optional YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sandrun.errors import InvalidSpec, ValidationError
from sandrun.spec import JobSpec, load_spec_file, parse_spec
from sandrun.spec.gpus import gpu_request


def parse_pairs(items: list[str], what: str, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidSpec(f"{flag} {item!r} must be KEY=VALUE", field=what)
        if not sep:
            if what != "env":
                raise InvalidSpec(f"{flag} {item!r} must be KEY=VALUE", field=what)
            if key not in os.environ:
                raise InvalidSpec(
                    f"--env {key} copies {key} from your environment, but it is not set",
                    field="env",
                    suggestions=[f"give a value: --env {key}=VALUE"],
                )
            value = os.environ[key]
        pairs[key] = value
    return pairs


def build_spec(
    command: list[str] | None,
    *,
    local: bool,
    upload: bool | None = None,
    file: Path | None,
    shell: str | None,
    options: dict[str, Any],
    env: list[str],
    labels: list[str],
    outputs: list[str],
    requires: list[str] | None = None,
) -> JobSpec:
    """The spec: the file's (if any), overlaid with the options given on the command line.

    Like Slurm's sbatch, a job run on this machine (`local`) runs in the current directory
    with the caller's PATH unless told otherwise (or it brings its own: an upload or a
    repository). A job sent to a server runs where its agent puts it.
    """
    data: dict[str, Any] = {}
    if file is not None:
        if command or shell:
            raise InvalidSpec(
                "give either a command or -f FILE, not both",
                field="command",
                suggestions=["put the command in the file, or drop -f"],
            )
        data = load_spec_file(file).to_json_dict()  # the file must be valid on its own
    elif command and shell:
        raise InvalidSpec("give either a command after -- or --shell, not both", field="command")
    elif command:
        data["command"] = command
    elif shell:
        data["shell"] = shell
    else:
        raise InvalidSpec(
            "no command given",
            field="command",
            suggestions=["sandrun run -- python3 train.py", "sandrun run -f job.yaml"],
        )
    data.update({k: v for k, v in options.items() if v is not None})
    if env:
        data["env"] = {**data.get("env", {}), **parse_pairs(env, "env", "--env")}
    if labels:
        data["labels"] = {**data.get("labels", {}), **parse_pairs(labels, "labels", "--label")}
    if requires:
        data["requires"] = {
            **data.get("requires", {}),
            **parse_pairs(requires, "requires", "--require"),
        }
    if outputs:
        data["outputs"] = [*data.get("outputs", []), *outputs]
    if local:
        if not (upload or data.get("repository") or data.get("code")):
            data.setdefault("working_dir", os.getcwd())
        data.setdefault("env", {}).setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    return parse_spec(data)


def gpus_option(text: str | None, min_memory: float | None) -> object:
    """--gpus 4xa100 and --min-gpu-memory 40, as the spec's gpus."""
    if min_memory is None:
        return text
    request = gpu_request(text if text is not None else 1, field="gpus")
    return {**request, "memory_gb": min_memory}


def repository_option(url: str | None, ref: str | None) -> dict[str, str] | None:
    if url is None:
        if ref is not None:
            raise ValidationError("--ref needs --repo", field="repository.ref")
        return None
    return {"url": url, "ref": ref or "main"}


def priority_option(text: str | None) -> str | int | None:
    """--priority takes a class name or a number; the spec wants numbers as numbers."""
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def volume_options(items: list[str]) -> list[dict[str, Any]]:
    """--volume NAME, NAME:/path, NAME:ro or NAME:/path:ro, as the spec's volumes."""
    mounts = []
    for item in items:
        name, *rest = item.split(":")
        mount: dict[str, Any] = {"name": name}
        if rest and rest[-1] in ("ro", "rw"):
            mount["read_only"] = rest.pop() == "ro"
        if len(rest) > 1:
            raise InvalidSpec(f"--volume {item!r} must be NAME[:PATH][:ro]", field="volumes")
        if rest:
            mount["mount_path"] = rest[0]
        mounts.append(mount)
    return mounts
