"""One exception hierarchy for sandrun.

Each class's docstring is its default message; `code` is stable (clients match on it);
`suggestions` tell the user what would be valid. The HTTP layer maps `http_status`.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence


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


class ValidationError(SandrunError):
    """The request is not valid."""

    code = "invalid_input"
    http_status = 400


class InvalidSpec(ValidationError):
    """The job spec is not valid."""

    code = "invalid_spec"
    http_status = 422


class AuthenticationError(SandrunError):
    """A valid API token is required (Authorization: Bearer <token>)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(SandrunError):
    """This token's role may not do that."""

    code = "forbidden"
    http_status = 403


class BadSignature(AuthenticationError):
    """The result's signature does not verify against its agent's key."""

    code = "bad_signature"
    http_status = 422


class BadKeyProof(AuthenticationError):
    """The registration does not prove that the agent holds its key's private half."""

    code = "bad_key_proof"


# --- jobs -------------------------------------------------------------------------------


class JobError(SandrunError):
    """The job operation failed."""

    code = "job_error"


class JobNotFoundError(JobError):
    """No job has that id."""

    code = "job_not_found"
    http_status = 404


class PipelineNotFound(JobError):
    """No pipeline run has that id."""

    code = "pipeline_not_found"
    http_status = 404


class IllegalTransition(JobError):
    """That state change is not allowed."""

    code = "illegal_transition"
    http_status = 409


class NoCheckpoint(JobError):
    """The job named has no checkpoint (yet) to start from."""

    code = "no_checkpoint"
    http_status = 409


class StaleAttempt(JobError):
    """The report is for an attempt that no longer holds the job."""

    code = "stale_attempt"
    http_status = 409


class TimeoutError(JobError, builtins.TimeoutError):
    """The job did not finish in the time given."""

    code = "wait_timeout"
    http_status = 408


class JobFailedError(JobError):
    """The job did not complete."""

    code = "job_failed"
    http_status = 409

    def __init__(
        self,
        message: str | None = None,
        *,
        job_id: str = "",
        state: str = "",
        exit_code: int | None = None,
        log_tail: str = "",
        field: str | None = None,
        suggestions: Sequence[str] = (),
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.exit_code = exit_code
        self.log_tail = log_tail
        super().__init__(message, field=field, suggestions=suggestions)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n--- last lines of its log ---\n{self.log_tail}" if self.log_tail else text


class RemoteFunctionError(JobError):
    """The remote function raised an exception."""

    code = "remote_function_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        remote_type: str = "",
        remote_traceback: str = "",
        exit_code: int | str | None = None,
        field: str | None = None,
        suggestions: Sequence[str] = (),
    ) -> None:
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.exit_code = exit_code  # what a SystemExit raised remotely carried
        super().__init__(message, field=field, suggestions=suggestions)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n--- remote traceback ---\n{self.remote_traceback}".rstrip()


class PythonVersionMismatch(RemoteFunctionError):
    """The function was serialized by a different Python than the agent runs."""

    code = "python_version_mismatch"


# --- resources --------------------------------------------------------------------------


class ResourceNotAvailableError(SandrunError):
    """No machine here has the resources the job asks for."""

    code = "resource_not_available"
    http_status = 409


class QuotaExceededError(SandrunError):
    """That is over a limit."""

    code = "quota_exceeded"
    http_status = 429


class OverOwnerLimit(QuotaExceededError):
    """That asks for more than the server lets one owner hold."""

    code = "over_owner_limit"
    http_status = 403


class HostPathRefused(Forbidden):
    """A server's jobs run only in what they bring, not in a directory of the node."""

    code = "host_path_refused"


class OverMaximum(QuotaExceededError):
    """That asks for more than this server lets one job have (its policy's maxima)."""

    code = "over_maximum"
    http_status = 403


class UploadTooLarge(QuotaExceededError):
    """The upload is larger than allowed."""

    code = "upload_too_large"
    http_status = 413


class ArchiveTooLarge(ValidationError):
    """The archive unpacks to more than this server takes."""

    code = "archive_too_large"
    http_status = 413


class OverQuota(QuotaExceededError):
    """Too much at once for this caller (the public API's per-address quota)."""

    code = "over_quota"

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class InsufficientFunds(SandrunError):
    """A priced job's most cost does not fit what its owner has available (docs/pool.md)."""

    code = "insufficient_funds"
    http_status = 409  # the request conflicts with what the balance holds now


class PublicApiOff(SandrunError):
    """The public API is turned off on this server; use /v1."""

    code = "public_api_off"
    http_status = 404


# --- infrastructure ---------------------------------------------------------------------


class StoreError(SandrunError):
    """The state store failed."""

    code = "store_error"
    http_status = 503


class StoreRefused(ValidationError):
    """The store cannot hold a value in this request (a number out of range, say)."""

    code = "store_refused"
    http_status = 400


class SchemaTooNew(StoreError):
    """The database schema is newer than this version of sandrun knows."""

    code = "schema_too_new"


class SchemaTooOld(StoreError):
    """The database schema is older than this version of sandrun: run `sandrun db upgrade`."""

    code = "schema_too_old"


class ArtifactError(SandrunError):
    """The artifact store failed."""

    code = "artifact_error"


class NodeNotFound(SandrunError):
    """No node has that name or id."""

    code = "node_not_found"
    http_status = 404


class ArtifactNotFound(ArtifactError):
    """No output or artifact has that name."""

    code = "artifact_not_found"
    http_status = 404


class OutputNotUploaded(ArtifactError):
    """An output named in the result was not uploaded first."""

    code = "output_not_uploaded"
    http_status = 409


class ArtifactStoreUnavailable(ArtifactError):
    """The server's object store failed or could not be reached: a fault, tried again."""

    code = "artifact_store_unavailable"
    http_status = 503


class NoPresignedUploads(ArtifactError):
    """This server keeps blobs on its own disk: upload them to it, not by presigned URL."""

    code = "no_presigned_uploads"
    http_status = 409


class KeyInUse(AuthenticationError):
    """That worker key belongs to another node."""

    code = "key_in_use"
    http_status = 409


class AgentError(SandrunError):
    """The agent failed."""

    code = "agent_error"


class AgentRunning(AgentError):
    """A local agent already serves this home."""

    code = "agent_running"


class WorkerDied(AgentError):
    """A warm worker's server exited (or stopped answering) while it had a call."""

    code = "worker_died"


class OutputsTooLarge(AgentError):
    """The job's outputs are larger than its limits.output_size."""

    code = "outputs_too_large"


class CheckoutFailed(AgentError):
    """The repository could not be checked out."""

    code = "checkout_failed"


class BadBundle(AgentError):
    """The uploaded code bundle is not a .tar.gz of plain files."""

    code = "bad_bundle"


class BadInput(AgentError):
    """An input file cannot be written where the spec puts it."""

    code = "bad_input"


class ServerUnreachable(SandrunError):
    """The sandrun server could not be reached."""

    code = "server_unreachable"
    http_status = 503
