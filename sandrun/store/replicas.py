"""A job's replicas, inside the transactions that queue and end them (issue 23).

A job with `consensus` waits while its replicas — jobs of the same spec, `replica_of` it —
run on nodes of distinct operators. Each replica's end is judged in its own transaction,
under its job's row lock (taken before the replica's: see `lock_job`): its digest is
recorded, and `pool.consensus.decide` says whether the job completes with the agreed
result, starts more replicas, or fails `no_consensus`. Ended jobs are returned for
`store/deps.py` to settle (their waiters, their escrow).
"""

from __future__ import annotations

import json
import random
from typing import Any

from sandrun.ids import new_id
from sandrun.models import AttemptResult, JobRecord
from sandrun.pool import trust
from sandrun.pool.consensus import Replica, Verdict, decide, digest
from sandrun.pool.costs import Terms
from sandrun.spec.pricing import Prices
from sandrun.states import FailureReason, JobState
from sandrun.store import reputation
from sandrun.store.database import Row, Tx
from sandrun.store.rows import job_from
from sandrun.store.transitions import Decision, event, must, set_state

_draw = random.SystemRandom().random  # a spot check must not be predictable by a node


def start(tx: Tx, job: JobRecord, now: float) -> None:
    """Queue a consensus job's first replicas (it stays waiting)."""
    rules = job.spec.consensus
    assert rules is not None
    tx.run("set_replicas", id=job.id, replicas=rules.n, quorum=rules.k, now=now)
    for number in range(1, rules.n + 1):
        _add(tx, job, number, now)
    message = f"{rules.n} replicas queued; {rules.k} of distinct operators must agree"
    event(tx, job.id, None, "replicated", message, now, {"k": rules.k, "n": rules.n})
    tx.notify("submitted")


HIGH = 3  # a job needing this many to agree is high-consensus: reputable nodes get it first


def _add(tx: Tx, parent: JobRecord, number: int, now: float) -> None:
    replica = new_id()
    rules = parent.spec.consensus
    prefer = int(rules is not None and rules.k >= HIGH)
    tx.run(
        "insert_replica",
        id=replica,
        parent=parent.id,
        replica=number,
        now=now,
        prefer_trusted=prefer,
    )
    tx.run("copy_job_inputs", id=replica, parent=parent.id)
    event(tx, replica, None, "submitted", f"replica {number} of job {parent.id}", now)


def replica_ended(tx: Tx, replica: JobRecord, now: float) -> list[JobRecord]:
    """Judge a replica's end; returns the jobs that ended because of it."""
    assert replica.replica_of is not None
    parent_row = must(tx, replica.replica_of, lock=True)
    parent = job_from(parent_row)
    if parent.is_terminal and replica.state is JobState.CANCELLED:
        return []  # stopped once its job had ended: nothing to judge
    rows = tx.all("replicas_of", parent=parent.id)
    mine = next(r for r in rows if r["id"] == replica.id)
    value = _digest(tx, parent, mine)
    if value is not None:
        tx.run("set_digest", id=replica.id, digest=value)
    if parent.is_terminal:
        return []  # agreed (or stopped) before this one ended
    views = [_view(r, value if r["id"] == replica.id else r["digest"]) for r in rows]
    rules = parent.spec.consensus
    assert rules is not None
    k = int(parent_row["quorum"] or rules.k)
    terms = _terms(parent_row)
    verdict = decide(rules, k, views)
    if verdict.agreed and rules.adaptive and k == 1 and _check(tx, verdict, terms):
        k = 2
        tx.run("set_replicas", id=parent.id, replicas=len(rows), quorum=k, now=now)
        message = f"spot check: a second replica checks node {verdict.agreeing[0].node}"
        event(tx, parent.id, None, "spot_check", message, now)
        verdict = decide(rules, k, views)
    if verdict.more:
        for number in range(len(rows) + 1, len(rows) + verdict.more + 1):
            _add(tx, parent, number, now)
        tx.run("set_replicas", id=parent.id, replicas=len(rows) + verdict.more, quorum=k, now=now)
        message = f"no agreement yet: {verdict.more} more replica(s) queued"
        event(tx, parent.id, None, "replicated", message, now, {"replicas": len(rows)})
        tx.notify("submitted")
        return []
    if verdict.agreed:
        return _agree(tx, parent, rows, views, verdict, k, terms, now)
    if verdict.impossible:
        return _no_consensus(tx, parent, views, k, now)
    return []


def _digest(tx: Tx, parent: JobRecord, row: Row) -> str | None:
    """A replica's result as a digest; None if it ended with no result to compare (a
    timeout, a limit, a loss, a cancel)."""
    state = JobState(row["state"])
    if not (state is JobState.COMPLETED or row["failure_reason"] == FailureReason.EXIT_CODE):
        return None
    rules = parent.spec.consensus
    assert rules is not None
    outs = tx.all("list_outputs", job_id=row["id"], attempt=row["attempts"])
    stdout = row["stdout_sha256"] if rules.stdout else None
    paths = {o["path"]: o["digest"] for o in outs}
    return digest(row["exit_code"], paths, rules.agree_on, stdout)


def _view(row: Row, value: str | None) -> Replica:
    ended = JobState(row["state"]).is_terminal
    operator = row["operator_key"] if row["node"] else None
    return Replica(row["id"], ended, value, operator, row["node"])


def _terms(row: Row) -> Terms:
    return Terms.model_validate_json(row["terms"]) if row["terms"] else Terms(prices=Prices())


def _check(tx: Tx, verdict: Verdict, terms: Terms) -> bool:
    """Whether a `low` job's one result is checked by a second replica."""
    node = verdict.agreeing[0].node
    keys = reputation.node_keys(tx, node) if node else ("", "")
    record = reputation.of(tx, reputation.subjects(*keys)[0])
    return trust.needs_check(record, terms, _draw())


def _agree(
    tx: Tx,
    parent: JobRecord,
    rows: list[Row],
    views: list[Replica],
    verdict: Verdict,
    k: int,
    terms: Terms,
    now: float,
) -> list[JobRecord]:
    """The job completes (or fails with the agreed exit code) with the agreed result."""
    by_id = {r["id"]: r for r in rows}
    first = by_id[verdict.agreeing[0].id]
    tx.run("copy_outputs", job_id=parent.id, source=first["id"])
    outcome = {**_digests(views), "k": k, "agreed": verdict.agreed}
    outcome["agreeing"] = [r.node for r in verdict.agreeing]
    outcome["dissenting"] = [r.node for r in verdict.dissenting]
    outcome["agreeing_replicas"] = [r.id for r in verdict.agreeing]
    tx.run("set_consensus", id=parent.id, consensus=json.dumps(outcome))
    if k > 1:  # a result accepted unchecked (a trusted node's `low` job) proves nothing
        for r in verdict.agreeing:
            keys = reputation.node_keys(tx, r.node or "")
            reputation.judge(tx, keys, terms, parent.id, now, valid=True)
    for r in verdict.dissenting:
        keys = reputation.node_keys(tx, r.node or "")
        reputation.judge(tx, keys, terms, parent.id, now, valid=False)
    exit_code = first["exit_code"]
    nodes = ", ".join(r.node or "?" for r in verdict.agreeing)
    message = (
        f"{k} replicas agreed (nodes {nodes})"
        if k > 1
        else f"accepted unchecked from trusted node {nodes}"
    )
    if verdict.dissenting:
        message += f"; {len(verdict.dissenting)} dissented"
    reason = None if exit_code == 0 else FailureReason.EXIT_CODE
    state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
    result_value = json.loads(first["result"]) if first["result"] is not None else None
    decision = Decision(state, message=message, result=result_value)
    ended = set_state(
        tx, parent, decision, now, AttemptResult(exit_code=exit_code, failure_reason=reason)
    )
    return [job_from(ended), *stop(tx, parent.id, now)]


def _digests(views: list[Replica]) -> dict[str, Any]:
    """The replicas started and the digests they reported, each with its nodes."""
    digests: dict[str, list[str]] = {}
    for v in views:
        if v.digest is not None:
            digests.setdefault(v.digest, []).append(v.node or "?")
    return {"n": len(views), "digests": digests}


def _no_consensus(
    tx: Tx, parent: JobRecord, views: list[Replica], k: int, now: float
) -> list[JobRecord]:
    outcome = {**_digests(views), "k": k, "agreed": None, "agreeing": [], "dissenting": []}
    tx.run("set_consensus", id=parent.id, consensus=json.dumps(outcome))
    seen = (
        "; ".join(f"{d[:12]}... from {', '.join(n)}" for d, n in outcome["digests"].items())
        or "none"
    )
    message = f"no consensus after {len(views)} replicas; digests seen: {seen}"
    result = AttemptResult(failure_reason=FailureReason.NO_CONSENSUS)
    ended = set_state(tx, parent, Decision(JobState.FAILED, message=message), now, result)
    return [job_from(ended), *stop(tx, parent.id, now)]


def stop(tx: Tx, parent: str, now: float) -> list[JobRecord]:
    """Stop a job's unfinished replicas (its agreement came, or it ended otherwise): those
    queued end now, those running are told to stop. Returns those that ended."""
    ended = []
    for row in tx.all("replicas_of", parent=parent):
        if JobState(row["state"]).is_terminal:
            continue  # an ended replica stays ended: no lock needed
        replica = job_from(must(tx, row["id"], lock=True))
        if replica.is_terminal:
            continue
        if replica.state is JobState.PENDING:
            decision = Decision(JobState.CANCELLED, message=f"not needed: job {parent} ended")
            ended.append(job_from(set_state(tx, replica, decision, now)))
        elif not replica.cancel_requested:
            tx.run("request_cancel", id=replica.id, now=now)
            message = f"stopping: job {parent} ended"
            event(tx, replica.id, replica.attempts, "cancel_requested", message, now)
            tx.notify("cancel")
    return ended
