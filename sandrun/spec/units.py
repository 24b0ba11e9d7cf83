"""Parsing of human quantities: memory sizes ("512MB", "8GB") and durations ("2h", "1h30m")."""

from __future__ import annotations

import re

# Binary units, as Slurm and Docker read them: "8GB" is 8 GiB.
_MEMORY_UNITS = {"": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10, "t": 2**20}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)


def parse_memory_mb(value: object) -> int:
    """MiB from an int (already MiB) or a string such as "512MB", "8GB", "1.5G", "2GiB".

    A bare number in a string is bytes ("1048576" is 1 MiB), as in Kubernetes.
    """
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as '512MB' or '8GB', or MiB as an integer")
    if isinstance(value, int | float):
        mb = float(value)
    elif isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if not match:
            raise ValueError(
                f"memory {value!r} is not a size; use e.g. '512MB', '8GB', '1.5GiB' "
                "(binary units) or an integer number of MiB"
            )
        mb = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    else:
        raise ValueError("memory must be a size such as '512MB' or '8GB', or MiB as an integer")
    if mb <= 0:
        raise ValueError("memory must be greater than zero")
    return max(1, round(mb))


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90", "90s", "30m", "2h", "1h30m", "1d"."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string such as '30m' or '2h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"duration {value!r} is not valid; use seconds or e.g. '90s', '30m', "
                    "'2h', '1h30m', '1d'"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    else:
        raise ValueError("a duration must be seconds or a string such as '30m' or '2h'")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


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
