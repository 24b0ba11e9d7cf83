"""Confining each attempt: namespaces (bubblewrap, else unshare), cgroups and rlimits."""

from __future__ import annotations

from sandrun.agent.sandbox.base import Box, Sandbox
from sandrun.agent.sandbox.runtime import (
    KINDS,
    Confined,
    Kind,
    Sandboxing,
    open_sandboxing,
    probe,
)
from sandrun.agent.sandbox.view import FsView

__all__ = [
    "KINDS",
    "Box",
    "Confined",
    "FsView",
    "Kind",
    "Sandbox",
    "Sandboxing",
    "open_sandboxing",
    "probe",
]
