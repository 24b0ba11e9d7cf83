"""Time-sortable, unguessable ids (UUIDv7 text) and UTC clock helpers."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def new_token() -> str:
    """A secret for fencing an attempt's reports."""
    return os.urandom(16).hex()


def now() -> float:
    """Seconds since the Unix epoch (UTC)."""
    return time.time()
