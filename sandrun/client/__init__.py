"""The SDK: `connect()`, the Client, and Job handles."""

from __future__ import annotations

from sandrun.client.client import Client, connect
from sandrun.client.job import Job

__all__ = ["Client", "Job", "connect"]
