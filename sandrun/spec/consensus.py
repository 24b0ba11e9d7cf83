"""A job's ask for agreement: `consensus: "2-of-3"`, a level, or the full mapping.

A job with `consensus` runs as replicas on nodes of distinct operators; it completes with a
result only once `k` of them report the same digest (exit code, the outputs that must
agree, stdout if asked). The pool's rules for it are in `sandrun/pool/`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from sandrun.spec.base import Strict
from sandrun.spec.text import forbid_nul_in_schema
from sandrun.spec.units import Int, number_only

MAX_REPLICAS = 16
# The levels a job may name instead of k and n; `low` is one replica whose node may be
# checked by a second (a spot check, or until the node has a trusted streak).
LEVELS: dict[str, tuple[int, int]] = {"low": (1, 1), "medium": (2, 3), "high": (3, 5)}
# What the schema publishes: the levels and every "K-of-N" (the parser takes spaces too).
CONSENSUS_PATTERN = "^(low|medium|high|{})$".format(
    "|".join(f"{k}-of-{n}" for n in range(1, MAX_REPLICAS + 1) for k in range(1, n + 1))
)
_K_OF_N = re.compile(r"^\s*(\d{1,2})\s*-?\s*of\s*-?\s*(\d{1,2})\s*$", re.IGNORECASE)


def _sizes_in_schema(schema: dict[str, Any]) -> None:
    """k <= n <= max_replicas, said in JSON Schema: one alternative per n."""
    forbid_nul_in_schema(schema)
    schema["anyOf"] = [
        {
            "properties": {
                "n": {"const": n},
                "k": {"maximum": n},
                "max_replicas": {"anyOf": [{"minimum": n}, {"type": "null"}]},
            }
        }
        for n in range(1, MAX_REPLICAS + 1)
    ]


class Consensus(Strict):
    model_config = ConfigDict(**{**Strict.model_config, "json_schema_extra": _sizes_in_schema})

    k: Int = Field(ge=1, le=MAX_REPLICAS)  # how many distinct operators must agree
    n: Int = Field(ge=1, le=MAX_REPLICAS)  # how many replicas start at once
    # More replicas are started while agreement is still possible, up to this many in all.
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS), BeforeValidator(number_only)] | (
        None
    ) = None
    # Output patterns that must agree (collected as outputs too); empty: every output.
    agree_on: list[Annotated[str, Field(pattern=r"^[^/\x00][^\x00]*$")]] = Field(
        default_factory=list, max_length=64
    )
    stdout: StrictBool = False  # stdout must agree too
    level: Literal["low", "medium", "high"] | None = None  # when the job named one

    @model_validator(mode="after")
    def _sizes(self) -> Consensus:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n}): k of n must agree")
        if self.max_replicas is not None and self.max_replicas < self.n:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be at least n ({self.n})")
        return self

    @property
    def adaptive(self) -> bool:
        """`low`: one replica, checked by a second unless its node is trusted."""
        return self.level == "low"

    @property
    def cap(self) -> int:
        """Replicas started at most: given, else n plus enough to outvote n - k dissenters
        (n + (n - k) + 1); for `low`, 3: the one, its check, and a tie-breaker."""
        if self.max_replicas is not None:
            return self.max_replicas
        return min(MAX_REPLICAS, max(3 if self.adaptive else 1, 2 * self.n - self.k + 1))


def parse_consensus(value: Any) -> Any:
    """ "2-of-3" or a level as the mapping they stand for; anything else as given."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if whole and not isinstance(value, bool):
        return {"k": int(value), "n": int(value)}  # n replicas that must all agree
    if not isinstance(value, str):
        return value
    level = value.strip().lower()
    if level in LEVELS:
        k, n = LEVELS[level]
        return {"k": k, "n": n, "level": level}
    match = _K_OF_N.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a consensus: use 'K-of-N' (such as '2-of-3'), "
            "a level (low, medium, high) or a mapping {k, n, max_replicas, agree_on, stdout}"
        )
    return {"k": int(match.group(1)), "n": int(match.group(2))}
