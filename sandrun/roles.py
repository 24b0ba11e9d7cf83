"""Who a token speaks for: its role (light, so the CLI's options can name it cheaply)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    USER = "user"  # submits and sees its own jobs
    AGENT = "agent"  # speaks only the agent endpoints
    ADMIN = "admin"  # sees everything
