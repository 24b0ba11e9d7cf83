"""sandrun: run people's code on a pool of machines.

import sandrun
job = sandrun.connect().run("python3 train.py", cpus=2, timeout="2h")
job.wait()

Names are imported on first use, so `python -m sandrun.runner` (what a function job runs)
starts without loading the client, the server or pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandrun.client import (
        App,
        AsyncClient,
        AsyncJob,
        Client,
        Cls,
        Function,
        FunctionCall,
        Job,
        JobBuilder,
        Pipeline,
        Run,
        SecretSpec,
        TaskConfig,
        VolumeSpec,
        connect,
        connect_async,
        enter,
        invoke,
        method,
    )
    from sandrun.errors import SandrunError
    from sandrun.runner import item
    from sandrun.spec import JobSpec, RetryPolicy

__version__ = "0.1.0"

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
    "JobSpec",
    "Pipeline",
    "RetryPolicy",
    "Run",
    "SandrunError",
    "SecretSpec",
    "TaskConfig",
    "VolumeSpec",
    "connect",
    "connect_async",
    "enter",
    "invoke",
    "item",
    "method",
]
_ELSEWHERE = {
    "SandrunError": "sandrun.errors",
    "JobSpec": "sandrun.spec",
    "RetryPolicy": "sandrun.spec",
    "item": "sandrun.runner",
}
_WHERE = {name: _ELSEWHERE.get(name, "sandrun.client") for name in __all__}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sandrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
