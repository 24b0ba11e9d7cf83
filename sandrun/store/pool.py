"""The pool's reads and admin writes in the store: balances, credits, the ledger's
entries and check, cost rows, reputation and quarantine, the server's own key. Part of
`Store` (a mixin)."""

from __future__ import annotations

import json
from typing import Any

from sandrun.errors import InsufficientFunds
from sandrun.pool.trust import Standing
from sandrun.store import ledger, reputation
from sandrun.store.database import Database


class PoolStore:
    db: Database

    def balance(self, owner: str) -> ledger.Balance:
        with self.db.transaction(write=False) as tx:
            return ledger.balance(tx, owner)

    def credit(self, owner: str, amount: int, now: float, memo: str | None = None) -> None:
        """Add `amount` micro-USD to an owner's balance (or `operator:NAME`'s), from the
        world outside the pool; a negative amount takes it back (a payout), never below
        zero."""
        with self.db.transaction() as tx:
            account = owner if owner.startswith("operator:") else ledger.user(owner)
            if amount >= 0:
                ledger.transfer(tx, ledger.WORLD, account, amount, "credit", now, memo=memo)
            elif not ledger.transfer(
                tx, account, ledger.WORLD, -amount, "debit", now, memo=memo, guarded=True
            ):
                raise InsufficientFunds(
                    f"{owner} has less than {ledger.dollars(-amount)} available to take back",
                    field="amount",
                )

    def transfers(
        self,
        account: str | None = None,
        job_id: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Transfers touching `account` (newest first), or those of one job (in order)."""
        with self.db.transaction(write=False) as tx:
            if job_id is not None:
                rows = tx.all("transfers_of_job", job_id=job_id)
            else:
                rows = tx.all(
                    "transfers_of_account",
                    account=account,
                    before=before if before is not None else 2**62,
                    limit=limit,
                )
        return [dict(r) for r in rows]

    def ledger_check(self) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            return ledger.check(tx)

    def job_costs(self, owner: str, since: float) -> list[dict[str, Any]]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("job_costs", owner=owner, since=since)
        return [{**dict(r), "labels": json.loads(r["labels"])} for r in rows]

    def reputations(self) -> dict[str, Standing]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("reputations")
        return {r["subject"]: reputation.standing(r) for r in rows}

    def set_quarantined(self, subject: str, quarantined: bool, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("set_quarantined", subject=subject, quarantined=int(quarantined), now=now)
            tx.notify("submitted")  # a released node may claim again: wake its polls

    def note_request(self, signature: str, now: float, window: float) -> bool:
        """Record a key-signed request; False if it was seen before (a replay). Those
        older than `window` are forgotten: their signed time no longer passes."""
        with self.db.transaction() as tx:
            tx.run("forget_requests", before=now - window)
            return bool(tx.run("note_request", signature=signature, at=now))

    def pool_counts(self, since: float) -> dict[str, int]:
        """Jobs queued and running now, and ended since `since` (throughput)."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("pool_counts", since=since)
        assert row is not None
        return {k: int(row[k] or 0) for k in row.keys()}

    def server_key(self, candidate: str, now: float) -> str:
        """The server's private key (base64): `candidate` if no server on this database
        has made one yet, else the one made first."""
        with self.db.transaction() as tx:
            tx.run("insert_server_identity", private_key=candidate, at=now)
            row = tx.one("server_identity")
        assert row is not None
        return str(row["private_key"])
