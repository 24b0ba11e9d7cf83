"""A server's scheduling policy: per-owner limits, reservations for big jobs, GPU prices.

Read from YAML (`sandrun server --policy policy.yaml`); unknown fields are refused, and
every error names the field. Without a file: no limits, reservations at once, catalogue
prices.

    limits:
      default: {max_running_jobs: 100, max_gpus: 8}   # owners not named below
      alice: {max_gpus: 16}
    reserve_after: 0     # seconds a job that fits no free node waits before one is kept for it
    preempt_after: 10    # ...and before it may preempt preemptible jobs of lower priority
    prices:              # USD per GPU-hour, by model (sandrun/spec/gpus.json names)
      a100: 1.80
    maxima:              # the most one job may ask for; a spec above is refused at submit
      log_size: 1GB
      output_size: 100GB
      timeout: 7d
      memory: 256GB
      processes: 100000
      env_size: 1MB      # names and values together
      spec_size: 4MB     # the whole spec as JSON (a script's text included)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandrun.errors import InvalidSpec
from sandrun.spec.fields import Duration, MemoryMB
from sandrun.spec.gpus import catalogue
from sandrun.spec.parse import invalid_spec_from
from sandrun.spec.pricing import PoolPolicy, Prices, by_model
from sandrun.spec.units import Int


class OwnerLimits(BaseModel):
    """What one owner may hold at once; None: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running_jobs: Int | None = Field(default=None, ge=0)
    max_gpus: Int | None = Field(default=None, ge=0)

    @property
    def any(self) -> bool:
        return self.max_running_jobs is not None or self.max_gpus is not None


class JobMaxima(BaseModel):
    """The most one job may ask for on this server; None: no maximum. Without a policy
    file a server still caps what would let one job exhaust it (logs, outputs, sizes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_size: MemoryMB | None = 1024
    output_size: MemoryMB | None = 100 * 1024
    timeout: Duration | None = None
    memory: MemoryMB | None = None
    disk: MemoryMB | None = None  # each agent caps it too (--job-disk)
    processes: Int | None = Field(default=100_000, ge=1)
    env_size: MemoryMB | None = 1  # MiB
    spec_size: MemoryMB | None = 4  # MiB


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: dict[str, OwnerLimits] = {}
    maxima: JobMaxima = JobMaxima()
    # None: never reserve (small jobs may then overtake a big one forever).
    reserve_after: float | None = Field(default=0.0, ge=0)
    # Seconds a job that fits no node's free room waits before it may preempt `preemptible`
    # jobs of lower priority (docs/lifecycle.md); None: never preempt.
    preempt_after: float | None = Field(default=10.0, ge=0)
    prices: dict[str, float] = {}
    pool: PoolPolicy = PoolPolicy()  # prices, the ledger and the rules of trust

    _known_models = field_validator("prices")(by_model)

    def limits_for(self, owner: str) -> OwnerLimits:
        return self.limits.get(owner) or self.limits.get("default") or OwnerLimits()

    @property
    def limited(self) -> bool:
        return any(limits.any for limits in self.limits.values())

    def price_per_gpu_hour(self, model: str) -> float:
        if model in self.prices:
            return self.prices[model]
        known = catalogue().get(model)
        return known.price_per_hour if known else 0.0


def parse_policy(data: Any, source: str = "policy") -> Policy:
    if data is None:
        return Policy()
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source} must be a mapping (limits, reserve_after, prices, maxima)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        errors = list(exc.errors())
        raise invalid_spec_from(errors, model_at=_model_at, source=f"{source}: ") from None


def _model_at(parent: tuple[str, ...]) -> type[BaseModel] | None:
    """Whose fields are valid under `parent`: the policy's, or an owner's limits."""
    if parent == ():
        return Policy
    if parent == ("maxima",):
        return JobMaxima
    if parent == ("pool",):
        return PoolPolicy
    if parent == ("pool", "prices"):
        return Prices
    return OwnerLimits if len(parent) == 2 and parent[0] == "limits" else None


def load_policy(path: str | Path) -> Policy:
    import yaml  # here, as in load_spec_file: only a server with a policy file reads one

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidSpec(f"cannot read policy file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path} is not valid YAML: {exc}") from None
    return parse_policy(data, str(path))
