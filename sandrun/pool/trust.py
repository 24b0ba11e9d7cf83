"""Whom to trust: reputation as counts, and the two rules read from it.

As BOINC's adaptive replication does it, a node's valid results in a row (its *streak*)
buy it trust: a `low` job's one result is accepted unchecked with a probability that
grows with the streak, up to 1 - `spot_check` (spot checks never stop). An invalid
result resets the streak. A node or operator with enough invalid results is quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandrun.pool.costs import Terms


@dataclass(frozen=True)
class Standing:
    """A node's (or an operator's) record."""

    valid: int = 0  # results that agreed with the quorum
    invalid: int = 0  # results that did not
    streak: int = 0  # valid results since the last invalid one
    lost: int = 0  # leases it let expire
    timeouts: int = 0  # replicas that ran past their timeout on it
    quarantined: bool = False

    @property
    def score(self) -> float:
        """The share of its checked results that were valid (1.0 before any)."""
        checked = self.valid + self.invalid
        return self.valid / checked if checked else 1.0


def unchecked_chance(standing: Standing, terms: Terms) -> float:
    """The probability that a `low` job's result from this node is accepted unchecked."""
    trusted = min(1.0, standing.streak / terms.trust_streak)
    return trusted * (1.0 - terms.spot_check)


def needs_check(standing: Standing, terms: Terms, draw: float) -> bool:
    """Whether a `low` job's result is checked by a second replica; `draw` is uniform in
    [0, 1) (random in the store, fixed in tests)."""
    return draw >= unchecked_chance(standing, terms)


def quarantine(standing: Standing, terms: Terms) -> bool:
    """Whether a record earns quarantine: enough invalid results, and a large enough share
    of what was checked."""
    checked = standing.valid + standing.invalid
    return (
        standing.invalid >= terms.quarantine_after
        and standing.invalid >= terms.quarantine_ratio * checked
    )
