"""One exception hierarchy for sandrun.

Each class's docstring is its default message; `code` is stable (clients match on it);
`suggestions` tell the user what would be valid. The HTTP layer maps `http_status`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class SandrunError(Exception):
    """sandrun failed."""

    code = "error"
    http_status = 500

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        suggestions: Sequence[str] = (),
    ) -> None:
        self.message = message or (type(self).__doc__ or self.code).strip()
        self.field = field
        self.suggestions = list(suggestions)
        super().__init__(self.message)

    def __str__(self) -> str:
        text = self.message
        if self.suggestions:
            text += " (" + "; ".join(self.suggestions) + ")"
        return text

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        out["suggestions"] = self.suggestions
        return out


# --- user input -------------------------------------------------------------------------


class InvalidInput(SandrunError):
    """The request is not valid."""

    code = "invalid_input"
    http_status = 400


class InvalidSpec(InvalidInput):
    """The job spec is not valid."""

    code = "invalid_spec"
    http_status = 422


class Unauthorized(SandrunError):
    """A valid API token is required (Authorization: Bearer <token>)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(SandrunError):
    """This token's role may not do that."""

    code = "forbidden"
    http_status = 403


# --- jobs -------------------------------------------------------------------------------


class JobError(SandrunError):
    """The job operation failed."""

    code = "job_error"


class JobNotFound(JobError):
    """No job has that id."""

    code = "job_not_found"
    http_status = 404


class IllegalTransition(JobError):
    """That state change is not allowed."""

    code = "illegal_transition"
    http_status = 409


class StaleAttempt(JobError):
    """The report is for an attempt that no longer holds the job."""

    code = "stale_attempt"
    http_status = 409


class WaitTimeout(JobError):
    """The job did not finish in the time given."""

    code = "wait_timeout"
    http_status = 408


# --- infrastructure ---------------------------------------------------------------------


class StoreError(SandrunError):
    """The state store failed."""

    code = "store_error"
    http_status = 503


class SchemaTooNew(StoreError):
    """The database schema is newer than this version of sandrun knows."""

    code = "schema_too_new"


class SchemaTooOld(StoreError):
    """The database schema is older than this version of sandrun: run `sandrun db upgrade`."""

    code = "schema_too_old"


class ArtifactError(SandrunError):
    """The artifact store failed."""

    code = "artifact_error"


class ArtifactNotFound(ArtifactError):
    """No output or artifact has that name."""

    code = "artifact_not_found"
    http_status = 404


class OutputNotUploaded(ArtifactError):
    """An output named in the result was not uploaded first."""

    code = "output_not_uploaded"
    http_status = 409


class AgentError(SandrunError):
    """The agent failed."""

    code = "agent_error"


class AgentRunning(AgentError):
    """A local agent already serves this home."""

    code = "agent_running"


class OutputsTooLarge(AgentError):
    """The job's outputs are larger than its limits.output_size."""

    code = "outputs_too_large"


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The valid choices nearest to a misspelled `word`, best first."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def error_for_code(code: str) -> type[SandrunError]:
    """The exception class with this stable `code` (for clients decoding server errors)."""
    pending: list[type[SandrunError]] = [SandrunError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return SandrunError
