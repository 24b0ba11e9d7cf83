"""Parsing of human quantities: memory sizes ("512MB", "8GB") and durations ("2h", "1h30m")."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field


def number_only(value: object) -> object:
    if isinstance(value, str | bool):
        raise ValueError("must be a number, not text or true/false")
    return value


# Numbers from JSON or YAML: 2 and 2.0 are both fine, "2" and true are refused. (Pydantic's
# strict types would also refuse 2.0, which JSON Schema counts as an integer.)
# A constraint goes before the validator, or the schema shows it as "ge" not "minimum".
Int = Annotated[int, BeforeValidator(number_only)]
Num = Annotated[float, BeforeValidator(number_only)]
# 2**53: the largest integer a JSON parser working in doubles reads exactly.
Count = Annotated[int, Field(ge=0, le=2**53), BeforeValidator(number_only)]
Ordinal = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(number_only)]
Amount = Annotated[float, Field(ge=0), BeforeValidator(number_only)]
Positive = Annotated[float, Field(gt=0), BeforeValidator(number_only)]

# A positive decimal number (no sign, no exponent). The same patterns go into the published
# JSON schema, so the API says exactly which strings it accepts.
_POSITIVE = r"(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)"

# Binary units, as Slurm and Docker read them: "8GB" is 8 GiB.
_MEMORY_UNITS = {"": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10, "t": 2**20}
# The most a size may say, in MiB (1 ZiB): far past any machine, well inside the store's
# 64-bit integers. The pattern says the same for strings, by how many digits each unit
# may take before its point, so the published schema admits nothing the server refuses.
MAX_MEMORY_MB = 2**50


def _size(digits: int) -> str:
    """A positive decimal with at most `digits` digits before its point."""
    return rf"(?:0*[1-9][0-9]{{0,{digits - 1}}}(?:\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)"


MEMORY_PATTERN = (
    r"^\s*(?:"
    + "|".join(
        rf"{_size(digits)}\s*{unit}(?:[iI]?[bB])?"
        for digits, unit in ((18, ""), (18, "[kK]"), (15, "[mM]"), (12, "[gG]"), (9, "[tT]"))
    )
    + r")\s*$"
)
_MEMORY_RE = re.compile(rf"^\s*({_POSITIVE})\s*([kKmMgGtT]?)(?:[iI]?[bB])?\s*$")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = rf"^\s*(?:{_POSITIVE}|(?:{_POSITIVE}\s*[sSmMhHdD]\s*)+)$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(rf"({_POSITIVE})\s*([sSmMhHdD])")
_NUMBER_RE = re.compile(rf"^\s*({_POSITIVE})\s*$")


def parse_memory_mb(value: object, capped: bool = True) -> int:
    """MiB from an integer (already MiB) or a string such as "512MB", "8GB", "1.5GiB"; at
    most MAX_MEMORY_MB unless not `capped` (a spec read back from the store).

    A bare number in a string is bytes ("1048576" is 1 MiB), as in Kubernetes.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 512.0 is the integer 512
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("memory must be greater than zero")
        if capped and value > MAX_MEMORY_MB:
            raise ValueError(f"{value} MiB is more than any machine has (at most 2**50)")
        return value
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    if capped and isinstance(value, str) and match and not re.fullmatch(MEMORY_PATTERN, value):
        raise ValueError(f"size {value!r} is more than any machine has")
    if not match:
        raise ValueError(
            f"memory {value!r} is not a size; use e.g. '512MB', '8GB', '1.5GiB' "
            "(binary units) or an integer number of MiB"
        )
    mb = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    return max(1, round(mb))


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90", "90s", "30m", "2h", "1h30m", "1d"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a duration must be greater than zero")
        return float(value)
    if isinstance(value, str) and _DURATION_RE.match(value):
        number = _NUMBER_RE.match(value)
        if number:
            return float(number.group(1))
        return sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PART.findall(value))
    raise ValueError(
        f"duration {value!r} is not valid; use seconds or e.g. '90s', '30m', '2h', '1h30m', '1d'"
    )


def format_duration(seconds: float) -> str:
    """A short human form: 850ms, 12.3s, 4m05s, 2h03m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
