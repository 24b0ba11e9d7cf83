"""The application layer over the store; see service.py."""

from __future__ import annotations

from sandrun.service.service import Service

__all__ = ["Service"]
