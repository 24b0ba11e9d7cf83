"""Signed results: each agent has an Ed25519 identity and signs what it reports.

The signed claim binds the job (its id and the hash of its spec, which names every input by
digest), the attempt, the exit code and each output's sha256. The server verifies the
signature against the key the agent registered with before it accepts the result; anyone
holding the job's record and its outputs can check it again (`sandrun verify`). A worker's
id is its public key, base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sandrun.models import AttemptResult, Usage
from sandrun.spec import JobSpec


def job_hash(spec: JobSpec) -> str:
    """sha256 of the spec's canonical JSON: the job's command and every input's digest."""
    return hashlib.sha256(_canonical(spec.to_json_dict())).hexdigest()


def result_claim(
    job_id: str, attempt: int, spec: JobSpec, exit_code: int | None, outputs: dict[str, str]
) -> bytes:
    """The bytes an agent signs for one attempt's result (`outputs`: path -> sha256). The
    public API serves this signature as it is, for clients that check results themselves."""
    return _canonical(
        {
            "v": 1,
            "job_id": job_id,
            "attempt": attempt,
            "job_hash": job_hash(spec),
            "exit_code": exit_code,
            "outputs": outputs,
        }
    )


def claim_of(job_id: str, attempt: int, spec: JobSpec, result: AttemptResult) -> bytes:
    """`result_claim` of an attempt's reported result."""
    outputs = {out.path: out.digest for out in result.outputs}
    return result_claim(job_id, attempt, spec, result.exit_code, outputs)


def meter_claim(job_id: str, attempt: int, usage: Usage, stdout: str | None) -> bytes | None:
    """The bytes an agent signs, beside its result, for what the attempt held and for how
    long (what the ledger prices) and its stdout's sha256 (what replicas may compare); each
    number as fixed-point text, so that it reads the same after a round trip through a
    database. None when there is nothing of it to sign."""
    fields = ("wall_seconds", "cpus", "memory_mb", "gpus")
    held = [usage.cpus, usage.memory_mb, usage.gpus, usage.gpu_model]
    if all(v is None for v in held) and stdout is None:
        return None
    metered: dict[str, str] = {f: f"{getattr(usage, f) or 0:.3f}" for f in fields}
    metered["gpu_model"] = usage.gpu_model or ""
    claim = {"v": 1, "meter": job_id, "attempt": attempt, "usage": metered, "stdout": stdout}
    return _canonical(claim)


def countersign_claim(job_id: str, attempt: int, worker_id: str, signature: str) -> bytes:
    """What a server signs over an agent's signed result it serves: that it took this
    result, signed by that key, for that attempt."""
    return _canonical(
        {
            "v": 1,
            "countersign": job_id,
            "attempt": attempt,
            "worker_id": worker_id,
            "signature": signature,
        }
    )


# How far a registration's signed time may be from the server's clock.
PROOF_WINDOW = 300.0


def registration_claim(name: str, worker_id: str, at: float) -> bytes:
    """What an agent signs to prove, at registration, that it holds its key's private half."""
    return _canonical({"v": 1, "register": name, "worker_id": worker_id, "at": at})


# Headers of a request signed by a key instead of a token (an identity without an account).
KEY_HEADER, AT_HEADER, SIGNATURE_HEADER = "x-sandrun-key", "x-sandrun-at", "x-sandrun-signature"


def request_claim(method: str, target: str, at: float, body: bytes) -> bytes:
    """What a key signs for one request: its method, its path and query as sent, when, and
    its body's sha256."""
    digest = hashlib.sha256(body).hexdigest()
    return _canonical(
        {"v": 1, "request": method.upper(), "target": target, "at": at, "body": digest}
    )


class Identity:
    """An agent's key pair, kept in one file (the raw private key, mode 0600)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        raw = key.public_key().public_bytes_raw()
        self.worker_id = base64.b64encode(raw).decode()

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> Identity:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def raw(self) -> bytes:
        return self.key.private_bytes_raw()

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Ed25519PrivateKey.generate().private_bytes_raw())
        try:
            os.link(partial, path)  # never replaces: of two first starts, one key wins
        except FileExistsError:
            pass
        finally:
            partial.unlink()
        return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))

    def sign(self, claim: bytes) -> str:
        return base64.b64encode(self.key.sign(claim)).decode()

    def request_headers(self, method: str, target: str, body: bytes, at: float) -> dict[str, str]:
        """The headers that sign a request as this key."""
        signature = self.sign(request_claim(method, target, at, body))
        return {KEY_HEADER: self.worker_id, AT_HEADER: repr(at), SIGNATURE_HEADER: signature}

    def prove(self, name: str, at: float) -> str:
        """The signature that registers this identity as node `name` at time `at`."""
        return self.sign(registration_claim(name, self.worker_id, at))


def verify(worker_id: str, claim: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `worker_id`'s signature of `claim`."""
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(worker_id, validate=True))
        public.verify(base64.b64decode(signature, validate=True), claim)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
