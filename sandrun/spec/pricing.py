"""The pool's section of the server policy (`pool:`): prices, the ledger, and the rules of
trust (spot checks, quarantine). Amounts are USD here; the ledger keeps integer micro-USD."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from sandrun.spec.gpus import canonical
from sandrun.spec.units import Int, Num


def by_model(prices: dict[str, float]) -> dict[str, float]:
    """A price table keyed by the catalogue's model names (a ValueError names the closest
    models to an unknown one); no price may be negative."""
    named = {}
    for text, price in prices.items():
        name, _ = canonical(text)
        if price < 0:
            raise ValueError(f"the price of {text} must not be negative")
        named[name] = float(price)
    return named


class Prices(BaseModel):
    """What a second of work costs, by what it holds (the issue's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_second: Num = Field(default=0.001, ge=0)  # per CPU reserved, per second
    gpu_second: dict[str, Num] = {"T4": 0.01, "A100": 0.05}  # per GPU of a model, per second
    other_gpu_second: Num = Field(default=0.05, ge=0)  # a model the table does not name
    memory_mb: Num = Field(default=0.0001, ge=0)  # per MB reserved, once per run
    priority_multiplier: Num = Field(default=2.0, ge=1)  # for a priority above 0

    _known_models = field_validator("gpu_second")(by_model)

    def gpu(self, model: str | None) -> float:
        """Per GPU-second of `model` (None: any model the job accepts, the dearest)."""
        if model is None:
            return max([self.other_gpu_second, *self.gpu_second.values()])
        name, _ = canonical(model)
        return self.gpu_second.get(name, self.other_gpu_second)


class PoolPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # On: every job holds its most cost in escrow at submit and pays for what ran.
    ledger: StrictBool = False
    prices: Prices = Prices()
    fee: Num = Field(default=0.0, ge=0, le=1)  # the platform's part of each payment
    # A job with no timeout is held (and stopped) at this, when the ledger is on.
    default_timeout: Num = Field(default=3600.0, gt=0)
    # `low` jobs: a node is trusted after this many valid results in a row; even then a
    # result is checked by a second replica with probability `spot_check`.
    trust_streak: Int = Field(default=10, ge=1)
    spot_check: Num = Field(default=0.1, ge=0, le=1)
    # A node (or operator) whose invalid results reach this many, and are at least
    # `quarantine_ratio` of its checked results, takes no more jobs until released.
    quarantine_after: Int = Field(default=3, ge=1)
    quarantine_ratio: Num = Field(default=0.5, gt=0, le=1)
    # A high-consensus job's replicas (k >= 3) go to nodes with a trusted streak first, to
    # any node once they have waited this many seconds.
    prefer_trusted_for: Num = Field(default=30.0, ge=0)
    # Identities without accounts: requests signed by an Ed25519 key, no token needed; the
    # key's jobs and balance are `key:<its base64>`'s (docs/pool.md).
    key_users: StrictBool = False
