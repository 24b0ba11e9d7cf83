"""What `sandrun gc` (POST /v1/admin/gc) asks for and what a retention pass removed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool

from sandrun.models import Wire
from sandrun.spec.fields import Duration
from sandrun.spec.units import Count


class GcRequest(BaseModel):
    """POST /v1/admin/gc: retention, as `sandrun gc` runs it (admins only)."""

    model_config = ConfigDict(extra="forbid")

    older_than: Duration = 30 * 86400.0  # seconds, or "30d", "12h", ...
    purge_jobs: StrictBool = False


class GcReport(Wire):
    """What a retention pass removed."""

    cutoff: float
    jobs_logs_removed: Count
    jobs_purged: Count
    nodes_removed: Count = 0
    artifacts_removed: Count
    bytes_freed: Count
