"""Confining each attempt: namespaces (bubblewrap, else unshare), cgroups and rlimits.

Names load on first use: an exec's helper (`enter.py`) imports the seccomp module alone,
and must not pay for the rest."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "Box": "base",
    "Sandbox": "base",
    "KINDS": "runtime",
    "Confined": "runtime",
    "Kind": "runtime",
    "Sandboxing": "runtime",
    "open_sandboxing": "runtime",
    "probe": "runtime",
    "FsView": "view",
}
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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sandrun.agent.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sandrun.agent.sandbox.{_WHERE[name]}"), name)
