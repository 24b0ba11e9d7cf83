"""Time-sortable, unguessable ids (UUIDv7 text) and UTC clock helpers."""

from __future__ import annotations

import os
import threading
import time
import uuid

_RANDOM_BITS = 74
_last = 0  # the last id's 48 clock bits and 74 random bits, to keep ids increasing
_lock = threading.Lock()


def new_id() -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562). Within one
    process ids only increase: one made in the same millisecond as the last is the last
    plus a random step (RFC 9562 6.2, method 2), so jobs submitted together sort, and
    are queued, in the order they were made."""
    global _last
    ms = time.time_ns() // 1_000_000
    payload = (ms & (2**48 - 1)) << _RANDOM_BITS | int.from_bytes(os.urandom(10), "big") >> 6
    with _lock:
        if payload <= _last:
            payload = _last + 1 + int.from_bytes(os.urandom(4), "big")
        _last = payload
    high, rand_a, rand_b = payload >> 74, (payload >> 62) & 0xFFF, payload & (2**62 - 1)
    value = high << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b  # version 7, variant
    return str(uuid.UUID(int=value))


def new_token() -> str:
    """A secret for fencing an attempt's reports."""
    return os.urandom(16).hex()


def now() -> float:
    """Seconds since the Unix epoch (UTC)."""
    return time.time()


def pause(waited: float) -> float:
    """How long a waiter that has waited `waited` seconds pauses before looking again:
    soon at first, then a tenth of the wait so far, at most 0.1 s."""
    return min(max(waited * 0.1, 0.002), 0.1)
