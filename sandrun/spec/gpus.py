"""GPUs in specs: the catalogue (`gpus.json`, data: model names, their memory variants,
aliases) and the request grammar ("2", "a100", "4xa100", "2xa100,h100").

"a100", "A100-80GB", "a100_80gb" and "nvidia-a100-sxm4-80gb" all name the a100 (the last
two with 80 GB); an unknown name fails with the closest known ones.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, model_validator

from sandrun.errors import InvalidSpec, ValidationError
from sandrun.hints import closest
from sandrun.spec.base import Strict
from sandrun.spec.units import Int, Positive

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


# "2", "a100", "4xa100", "4*a100", the multiplication sign people paste from docs, and
# "2xa100,h100": two GPUs, all a100s or all h100s.
_COUNT = r"(?:[0-9]|[1-5][0-9]|6[0-4])"
_SOME = r"(?:[1-9]|[1-5][0-9]|6[0-4])"  # before a type: "0xa100" asks for nothing
_MODEL = r"[A-Za-z][A-Za-z0-9_.-]*"
_MODELS = rf"{_MODEL}(?:\s*,\s*{_MODEL})*"
_GPU_RE = re.compile(rf"^\s*(?:({_COUNT})|(?:({_SOME})\s*[x\u00d7*]\s*)?({_MODELS}))\s*$")
# The schema publishes the names sandrun knows, so a schema-valid request is one it
# accepts: a list names plain models (memory sizes in a list could disagree).
_PLAIN, _SIZED = spellings()
_WORDS = [n for n in _PLAIN if n[0].isalpha()]  # "4090" alone would read as a count
_KNOWN = "|".join(re.escape(n) for n in sorted(_WORDS + _SIZED, key=len, reverse=True))
_KNOWN_PLAIN = "|".join(re.escape(n) for n in sorted(_WORDS, key=len, reverse=True))
GPU_PATTERN = (
    rf"^\s*(?:{_COUNT}|(?:{_SOME}\s*[x\u00d7*]\s*)?(?:{_KNOWN})(?:\s*,\s*(?:{_KNOWN_PLAIN}))*)\s*$"
)
_GPU_TYPE_SCHEMA = {
    "anyOf": [
        {"type": "string", "enum": _PLAIN + _SIZED},
        {"type": "array", "items": {"type": "string", "enum": _PLAIN}, "minItems": 1},
        {"type": "null"},
    ]
}


class GpuRequest(Strict):
    """GPUs a job needs: how many, of which model (see gpus.json) or which models (a list:
    any one of them, all of the job's GPUs alike), with how much memory each. A model named
    with its memory ("a100-80gb") sets `memory_gb` too."""

    count: Int = Field(default=1, ge=1, le=64)
    type: Annotated[str | list[str] | None, WithJsonSchema(_GPU_TYPE_SCHEMA)] = None
    memory_gb: Positive | None = None

    @model_validator(mode="before")
    @classmethod
    def _model(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("type") is None:
            return data
        named = data["type"] if isinstance(data["type"], list) else [data["type"]]
        if not named:
            raise ValueError("type: name at least one model, or leave type out for any")
        if not all(isinstance(n, str) for n in named):
            return data  # pydantic says what is wrong with it
        models = [canonical(n) for n in named]
        memories = {memory for _, memory in models if memory is not None}
        if len(memories) > 1:
            sizes = " and ".join(f"{m:g} GB" for m in sorted(memories))
            raise ValueError(f"the types name {sizes}; set memory_gb to the least you need")
        names = list(dict.fromkeys(name for name, _ in models))
        data = {**data, "type": names[0] if len(names) == 1 else names}
        if memories and data.get("memory_gb") is None:
            data["memory_gb"] = memories.pop()
        return data

    @property
    def types(self) -> tuple[str, ...]:
        """The acceptable models; empty: any."""
        if self.type is None:
            return ()
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)


def parse_gpus(value: object) -> object:
    """A job's `gpus` (2, "a100", "4xa100", "2xa100,h100") as GpuRequest fields; 0: None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 2.0 is the integer 2
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value == 0 else {"count": value}
    if isinstance(value, str):
        match = _GPU_RE.match(value)
        if not match:
            raise ValueError(
                f"gpus {value!r} is not valid; use a count (2), a type (a100), both (4xa100) "
                "or acceptable types (2xa100,h100)"
            )
        if match.group(1) is not None:
            count = int(match.group(1))
            return None if count == 0 else {"count": count}
        names = [name.strip().lower() for name in match.group(3).split(",")]
        return {"count": int(match.group(2) or 1), "type": names[0] if len(names) == 1 else names}
    return value


def gpu_request(value: object, field: str = "gpus") -> dict[str, Any]:
    """A GPU request ("a100", "4xa100", 2) as the fields of a GpuRequest."""
    try:
        parsed = parse_gpus(value)
    except ValueError as exc:
        raise InvalidSpec(f"{field}: {exc}", field=field) from None
    if not isinstance(parsed, dict):
        raise InvalidSpec(f"{field}: {value!r} asks for no GPU", field=field)
    return parsed
