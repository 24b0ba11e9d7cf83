"""The SDK: `connect()`, the Client, Job handles, the builder, remote functions.

Each name loads its module when first used, so a command that needs one part (the CLI's
`status`, say) does not pay for the others (asyncio, the HTTP client, the embedded store).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandrun.client.aio import AsyncClient, AsyncJob, connect_async
    from sandrun.client.app import App
    from sandrun.client.builder import JobBuilder
    from sandrun.client.classes import Cls, enter, method
    from sandrun.client.client import Client, connect
    from sandrun.client.functions import Function, FunctionCall, invoke
    from sandrun.client.job import Job
    from sandrun.client.pipeline import Pipeline
    from sandrun.client.runs import Run
    from sandrun.client.task import SecretSpec, TaskConfig, VolumeSpec

_WHERE = {
    "AsyncClient": "aio",
    "AsyncJob": "aio",
    "connect_async": "aio",
    "JobBuilder": "builder",
    "Cls": "classes",
    "enter": "classes",
    "method": "classes",
    "Client": "client",
    "connect": "client",
    "App": "app",
    "Function": "functions",
    "FunctionCall": "functions",
    "invoke": "functions",
    "Job": "job",
    "Pipeline": "pipeline",
    "Run": "runs",
    "TaskConfig": "task",
    "VolumeSpec": "task",
    "SecretSpec": "task",
}

__all__ = [
    "App",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Cls",
    "Function",
    "FunctionCall",
    "Job",
    "JobBuilder",
    "Pipeline",
    "Run",
    "SecretSpec",
    "TaskConfig",
    "VolumeSpec",
    "connect",
    "connect_async",
    "enter",
    "invoke",
    "method",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sandrun.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sandrun.client.{_WHERE[name]}"), name)
