"""The SDK: `connect()`, the Client, Job handles, the builder, remote functions."""

from __future__ import annotations

from sandrun.client.aio import AsyncClient, AsyncJob, connect_async
from sandrun.client.builder import JobBuilder
from sandrun.client.client import Client, connect
from sandrun.client.functions import App, Function, FunctionCall, invoke
from sandrun.client.job import Job
from sandrun.client.task import TaskConfig

__all__ = [
    "App",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Function",
    "FunctionCall",
    "Job",
    "JobBuilder",
    "TaskConfig",
    "connect",
    "connect_async",
    "invoke",
]
