"""The GPU catalogue (`gpus.json`, data): model names, their memory variants, aliases.

"a100", "A100-80GB", "a100_80gb" and "nvidia-a100-sxm4-80gb" all name the a100 (the last
two with 80 GB); an unknown name fails with the closest known ones.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

from sandrun.errors import ValidationError, closest

_MEMORY = re.compile(r"[-_ ]?(\d+)\s*g(?:i)?b?$")


@dataclass(frozen=True)
class GpuModel:
    name: str
    memory_gb: tuple[float, ...]
    aliases: tuple[str, ...]
    price_per_hour: float


@functools.cache
def catalogue() -> dict[str, GpuModel]:
    data = json.loads(resources.files("sandrun.spec").joinpath("gpus.json").read_text())
    return {
        name: GpuModel(name, tuple(d["memory_gb"]), tuple(d["aliases"]), d["price_per_hour"])
        for name, d in data.items()
        if not name.startswith("_")
    }


@functools.cache
def _names() -> dict[str, str]:
    names = {}
    for model in catalogue().values():
        for name in (model.name, *model.aliases):
            names[name] = model.name
    return names


def spellings() -> tuple[list[str], list[str]]:
    """The names the published schema lists: every model and alias, and every model with
    one of its memory sizes ("a100-80gb"). `canonical` also takes other case and
    punctuation ("A100_80GB", "nvidia-a100-sxm4-80gb"); the schema names the plain forms."""
    plain = sorted(_names())
    sized = sorted(f"{m.name}-{size:g}gb" for m in catalogue().values() for size in m.memory_gb)
    return plain, sized


def canonical(text: str) -> tuple[str, float | None]:
    """(model name, memory GB if the text names a variant) for a GPU name; ValueError
    naming the closest models if it is not one sandrun knows."""
    name = text.strip().lower().replace("_", "-").removeprefix("nvidia-")
    # The whole name first: "a10g" is a model, not "a" with 10 GB.
    readings: list[tuple[str, float | None]] = [(name, None)]
    if match := _MEMORY.search(name):
        readings.append((name[: match.start()], float(match.group(1))))
    for base, memory in readings:
        for candidate in (base, re.sub(r"-(sxm\d?|pcie)$", "", base)):
            if candidate in _names():
                model = catalogue()[_names()[candidate]]
                if memory is not None and memory not in model.memory_gb:
                    sizes = " or ".join(f"{m:g}" for m in model.memory_gb)
                    raise ValueError(f"{model.name} GPUs have {sizes} GB, not {memory:g}")
                return model.name, memory
    near = closest(name, _names()) or sorted(catalogue())
    raise ValueError(f"GPU {text!r} is not one sandrun knows; did you mean {', '.join(near)}?")


def declared_gpus(text: str) -> dict[str, object]:
    """An agent's `--gpus` ("2xa100-80gb", "h100", "0") as Capacity fields; a model named
    without its memory is taken at its largest."""
    from sandrun.spec.job import gpu_request  # job.py imports this module

    if text.strip() in ("0", ""):
        return {"gpus": 0, "gpu_type": None, "gpu_memory_gb": 0}
    request = gpu_request(text, field="--gpus")
    if request.get("type") is None:
        raise ValidationError(
            f"--gpus {text!r} must name the model, e.g. 2xa100-80gb", field="gpus"
        )
    try:
        name, memory = canonical(request["type"])
    except ValueError as exc:
        raise ValidationError(f"--gpus: {exc}", field="gpus") from None
    return {
        "gpus": request["count"],
        "gpu_type": name,
        "gpu_memory_gb": memory or max(catalogue()[name].memory_gb),
    }
