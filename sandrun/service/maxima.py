"""What one job asks for, against the operator's maxima (the policy's `maxima`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from sandrun.spec import JobSpec
from sandrun.spec.policy import JobMaxima


def over(spec: JobSpec, most: JobMaxima) -> Iterator[tuple[str, float, float, str]]:
    """(field, asked, maximum, unit) for each of the spec's asks over its maximum."""
    env_mb = sum(len(k.encode()) + len(v.encode()) for k, v in spec.env.items()) / 2**20
    spec_mb = len(json.dumps(spec.to_json_dict()).encode()) / 2**20
    asks: list[tuple[str, float | None, float | None, str]] = [
        ("limits.log_size", spec.limits.log_size, most.log_size, " MiB"),
        ("limits.output_size", spec.limits.output_size, most.output_size, " MiB"),
        ("limits.processes", spec.limits.processes, most.processes, ""),
        ("timeout", spec.timeout, most.timeout, " s"),
        ("memory", spec.memory, most.memory, " MiB"),
        ("limits.disk", spec.limits.disk, most.disk, " MiB"),
        ("env", round(env_mb, 3), most.env_size, " MiB"),
        ("spec", round(spec_mb, 3), most.spec_size, " MiB"),
    ]
    for field, asked, maximum, unit in asks:
        if asked is not None and maximum is not None and asked > maximum:
            yield field, asked, maximum, unit
