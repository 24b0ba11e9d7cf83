"""An app: a named group of remote functions and classes sharing a client.

app = sandrun.App("ml")

@app.function(gpu="a100")
def train(data): ...

@app.cls(gpu="a100", min_workers=1)
class Model: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sandrun.client.classes import Cls
from sandrun.client.functions import Function
from sandrun.spec import parse_spec
from sandrun.spec.environment import environment_fields

if TYPE_CHECKING:
    from sandrun.client.client import Client

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class App:
    """A named group of functions sharing a client (by default `sandrun.connect()`)."""

    def __init__(self, name: str, client: Client | None = None) -> None:
        self.name = name
        self._client = client

    @property
    def client(self) -> Client:
        if self._client is None:
            from sandrun.client.client import connect

            self._client = connect()
        return self._client

    def function(
        self,
        *,
        cpus: float | None = None,
        memory: str | int | None = None,
        gpu: str | int | None = None,
        timeout: str | float | None = None,
        retries: int | None = None,
        min_workers: int | None = None,
        idle_timeout: str | float | None = None,
        upload_code: bool = False,
        **fields: Any,
    ) -> Callable[[Callable[P, R]], Function[P, R]]:
        """Run the decorated function as a job per call, with these resources (and any
        other spec fields: env, network, limits, labels, priority, requirements=[...],
        environment="NAME"...). `min_workers` warm
        workers are kept for its calls on a node that runs one, until no call has come for
        `idle_timeout` (seconds, or "10m"; the agent's default if unset)."""
        spec = _spec(cpus, memory, gpu, timeout, retries, min_workers, idle_timeout, fields)

        def wrap(fn: Callable[P, R]) -> Function[P, R]:
            return Function(self, fn, spec, upload_code)

        return wrap

    def cls(
        self,
        *,
        cpus: float | None = None,
        memory: str | int | None = None,
        gpu: str | int | None = None,
        timeout: str | float | None = None,
        retries: int | None = None,
        min_workers: int | None = None,
        idle_timeout: str | float | None = None,
        upload_code: bool = False,
        **fields: Any,
    ) -> Callable[[type[T]], Cls[T]]:
        """A class whose methods run as jobs: `Model(args).predict.remote(x)`. Its
        `@sandrun.enter()` methods run once per warm worker (loading a model, say), before
        the worker's calls, each in a fresh fork of the entered instance; resources as for
        `function`."""
        spec = _spec(cpus, memory, gpu, timeout, retries, min_workers, idle_timeout, fields)

        def wrap(cls: type[T]) -> Cls[T]:
            return Cls(self, cls, spec, upload_code)

        return wrap


def _spec(
    cpus: float | None,
    memory: str | int | None,
    gpu: str | int | None,
    timeout: str | float | None,
    retries: int | None,
    min_workers: int | None,
    idle_timeout: str | float | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """The spec fields of a function's or class's keyword arguments, checked now: a bad
    one fails at the decorator, not at a call."""
    given = {"cpus": cpus, "memory": memory, "gpus": gpu, "timeout": timeout, "retries": retries}
    spec: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    warm = {"min_workers": min_workers, "idle_timeout": idle_timeout}
    if any(v is not None for v in warm.values()):
        spec["warm"] = {k: v for k, v in warm.items() if v is not None}
    spec |= environment_fields(fields)  # requirements=[...], python="3.12", image="NAME"
    parse_spec({**spec, "shell": "true"})
    return spec
