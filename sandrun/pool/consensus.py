"""When replicas agree: each replica's result as a digest, and what a job's replicas so
far decide — agreement, more replicas, or no consensus.

A digest binds the exit code, the sha256 of each output that must agree, and stdout's
sha256 if the job asked. Votes count by operator: one operator's many nodes are one vote,
so nodes run by one party cannot make a quorum together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sandrun.spec.consensus import Consensus


def digest(
    exit_code: int | None,
    outputs: dict[str, str],
    agree_on: Sequence[str] = (),
    stdout: str | None = None,
) -> str:
    """The result a replica reports, as one sha256: `outputs` is path -> sha256, of which
    only those under an `agree_on` pattern count (all, if none is given)."""
    kept = {p: d for p, d in outputs.items() if not agree_on or _under(p, agree_on)}
    body = {"v": 1, "exit_code": exit_code, "outputs": kept, "stdout": stdout}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _under(path: str, patterns: Sequence[str]) -> bool:
    """Whether `path` was collected by one of the glob `patterns`: it matches one, or lies
    in a directory that does (a matched directory brings all its files)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(_glob(p).fullmatch(prefix) for p in patterns for prefix in prefixes)


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class Replica:
    """One replica as the decision sees it."""

    id: str
    ended: bool
    digest: str | None = None  # None: it ended with no result (a timeout, a loss, ...)
    operator: str | None = None  # whose node reported it
    node: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What the replicas so far decide."""

    agreed: str | None = None  # the digest k operators agree on
    agreeing: list[Replica] = field(default_factory=list)  # one per operator, k of them
    dissenting: list[Replica] = field(default_factory=list)  # reported another digest
    more: int = 0  # replicas to start now
    impossible: bool = False  # no agreement can come: the job fails `no_consensus`

    @property
    def waiting(self) -> bool:
        return self.agreed is None and not self.more and not self.impossible


def decide(rules: Consensus, k: int, replicas: Sequence[Replica]) -> Verdict:
    """The verdict of `replicas` (all of one job's, started so far) for agreement of `k`."""
    voters: dict[str, dict[str, Replica]] = {}  # digest -> operator -> its first replica
    for r in replicas:
        if r.ended and r.digest is not None:
            voters.setdefault(r.digest, {}).setdefault(r.operator or r.node or r.id, r)
    for value, by_operator in voters.items():
        if len(by_operator) >= k:
            agreeing = list(by_operator.values())[:k]
            dissenting = [r for r in replicas if r.ended and r.digest not in (None, value)]
            return Verdict(agreed=value, agreeing=agreeing, dissenting=dissenting)
    running = sum(1 for r in replicas if not r.ended)
    best = max((len(v) for v in voters.values()), default=0)
    if best + running >= k:
        return Verdict()
    room = rules.cap - len(replicas)
    if room <= 0:
        return Verdict(impossible=True)
    return Verdict(more=min(room, k - best - running))
