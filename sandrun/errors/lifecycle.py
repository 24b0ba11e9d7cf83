"""Errors of a running job's life past start and cancel (docs/lifecycle.md)."""

from __future__ import annotations

from sandrun.errors import AgentError


class ExecUnavailable(AgentError):
    """A command could not be run inside the job: its agent cannot be reached for it, or
    cannot enter the job's sandbox."""

    code = "exec_unavailable"
    http_status = 503
