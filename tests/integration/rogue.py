"""A rogue agent: one that speaks the agent API itself with a key of its own, and reports
whatever its test tells it to (a cheat's outputs, a forged path)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from sandrun.models import Claim
from sandrun.protocol import KeyProof
from sandrun.signing import Identity, result_claim
from tests.integration.cluster import Cluster

FREE = {"cpus": 1, "memory_mb": 512}


class Rogue:
    """`token`: the agent token it registers with (its operator); `labels`: its node's."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        identity: Identity,
        token: str = "agents",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.cluster, self.name, self.identity = cluster, name, identity
        self.token = token
        self.labels = labels if labels is not None else {"pool": "rogue"}
        self.node = ""
        self.url = cluster.url  # the server it speaks to

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster.tokens[self.token]}"}

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/agent/{path}", json=body, headers=self._headers(), timeout=30
        )

    def register(
        self, public_key: str | None = None, proof: KeyProof | None = None
    ) -> httpx.Response:
        at = time.time()
        key = public_key or self.identity.worker_id
        proof = proof or KeyProof(at=at, signature=self.identity.prove(self.name, at))
        answer = self.post(
            "register",
            {
                "name": self.name,
                "capacity": FREE,
                "labels": self.labels,
                "public_key": key,
                "key_proof": proof.model_dump(),
            },
        )
        if answer.status_code == 200:
            self.node = answer.json()["node_id"]
        return answer

    def beat(self) -> None:
        """A heartbeat: a node silent for a lease takes no work."""
        assert self.post("heartbeat", {"node": self.node}).status_code == 200

    def try_claim(self, wait: float = 10) -> Claim | None:
        """The next job it may take, started; None if none came within `wait` seconds."""
        self.beat()
        answer = self.post("claim", {"node": self.node, "free": FREE, "wait": wait})
        if answer.status_code == 204 or not answer.content or answer.json() is None:
            return None
        assert answer.status_code == 200, answer.text
        claim = Claim.model_validate(answer.json())
        started = self.post("start", {"ref": claim.ref.model_dump(), "pid": 1})
        assert started.status_code == 204, started.text
        return claim

    def claim(self) -> Claim:
        claim = self.try_claim()
        assert claim is not None, f"{self.name} was given no job"
        return claim

    def put(self, data: bytes) -> str:
        answer = httpx.post(f"{self.url}/v1/agent/artifacts", content=data, headers=self._headers())
        return str(answer.json()["digest"])

    def complete(
        self, claim: Claim, outputs: list[dict[str, Any]], exit_code: int = 0
    ) -> httpx.Response:
        signed = result_claim(
            claim.job.id,
            claim.attempt,
            claim.job.spec,
            exit_code,
            {o["path"]: o["digest"] for o in outputs},
        )
        result = {
            "exit_code": exit_code,
            "outputs": outputs,
            "signature": self.identity.sign(signed),
        }
        return self.post("complete", {"ref": claim.ref.model_dump(), "result": result})

    def report(self, claim: Claim, files: dict[str, bytes]) -> httpx.Response:
        """Complete `claim` with these files as its outputs (whatever the job would write)."""
        outputs = [
            {"attempt": claim.attempt, "path": path, "digest": self.put(data), "size": len(data)}
            for path, data in files.items()
        ]
        return self.complete(claim, outputs)
