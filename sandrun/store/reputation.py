"""Reputation records, inside the transactions that judge results (issue 23).

A record is kept per node (`node:` and its worker key, or its id without one: a key
outlives restarts) and per operator (`operator:NAME`). The rules that read it are in
`sandrun/pool/trust.py`.
"""

from __future__ import annotations

from sandrun.pool.costs import Terms
from sandrun.pool.trust import Standing, quarantine
from sandrun.store.database import Row, Tx
from sandrun.store.transitions import event


def subjects(node_key: str, operator_key: str) -> tuple[str, str]:
    return f"node:{node_key}", f"operator:{operator_key}"


def standing(row: Row | None) -> Standing:
    if row is None:
        return Standing()
    return Standing(
        valid=int(row["valid"]),
        invalid=int(row["invalid"]),
        streak=int(row["streak"]),
        lost=int(row["lost"]),
        timeouts=int(row["timeouts"]),
        quarantined=bool(row["quarantined"]),
    )


def of(tx: Tx, subject: str) -> Standing:
    return standing(tx.one("reputation_of", subject=subject))


def add(
    tx: Tx,
    keys: tuple[str, str],
    now: float,
    *,
    valid: int = 0,
    invalid: int = 0,
    lost: int = 0,
    timeouts: int = 0,
) -> list[Standing]:
    """Count results (or losses) against a node's and its operator's records."""
    counts = {"valid": valid, "invalid": invalid, "lost": lost, "timeouts": timeouts}
    out = []
    for subject in subjects(*keys):
        out.append(standing(tx.one("reputation_add", subject=subject, now=now, **counts)))
    return out


def judge(
    tx: Tx, keys: tuple[str, str], terms: Terms, job_id: str, now: float, *, valid: bool
) -> None:
    """Record a checked result; quarantine a record that has earned it (the node's, or
    its operator's: one operator's other nodes stop too)."""
    records = add(tx, keys, now, valid=int(valid), invalid=int(not valid))
    for subject, record in zip(subjects(*keys), records, strict=True):
        if not valid and not record.quarantined and quarantine(record, terms):
            tx.run("set_quarantined", subject=subject, quarantined=1, now=now)
            message = (
                f"{subject} quarantined: {record.invalid} invalid of "
                f"{record.valid + record.invalid} checked results"
            )
            event(tx, job_id, None, "quarantined", message, now, {"subject": subject})


def node_keys(tx: Tx, node: str) -> tuple[str, str]:
    row = tx.one("node_keys", node=node)
    return (row["node_key"], row["operator_key"]) if row else (node, node)
