"""The node daemon: capability detection, claim loop, executor, log pump, outputs."""

from __future__ import annotations

from sandrun.agent.agent import Agent
from sandrun.agent.capacity import detect_capacity
from sandrun.agent.executor import Executor
from sandrun.agent.wake import Waker, address, notify

__all__ = ["Agent", "Executor", "Waker", "address", "detect_capacity", "notify"]
