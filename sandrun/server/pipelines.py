"""The pipeline API: thin routes over the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from sandrun.pipeline.models import PipelineRun, PipelineStatus, PipelineSubmit
from sandrun.server.auth import ERRORS, ServiceDep, UserDep, viewer
from sandrun.server.params import JobId

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/pipelines", status_code=status.HTTP_201_CREATED)
def run_pipeline(body: PipelineSubmit, caller: UserDep, service: ServiceDep) -> PipelineRun:
    """Check a pipeline definition whole and start a run; a bad one changes nothing."""
    admin = viewer(caller) is None
    return service.run_pipeline(body.definition, body.params, caller.name, admin=admin)


@router.get("/pipelines")
def list_pipelines(
    caller: UserDep, service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[PipelineRun]:
    return service.pipelines(viewer(caller), limit)


@router.get("/pipelines/{run_id}")
def pipeline_status(run_id: JobId, caller: UserDep, service: ServiceDep) -> PipelineStatus:
    return service.pipeline_status(run_id, viewer(caller))


@router.post("/pipelines/{run_id}/cancel")
def cancel_pipeline(run_id: JobId, caller: UserDep, service: ServiceDep) -> PipelineRun:
    return service.cancel_pipeline(run_id, viewer(caller))


@router.post("/pipelines/{run_id}/retry", status_code=status.HTTP_201_CREATED)
def retry_pipeline(run_id: JobId, caller: UserDep, service: ServiceDep) -> PipelineRun:
    """A new run that reuses each step the old run completed with the same inputs."""
    return service.retry_pipeline(run_id, viewer(caller))
