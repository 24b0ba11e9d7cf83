"""Remote functions: `@app.function(gpu="a100")`, then `.remote()`, `.spawn()`, `.map()`.

Each call is one job. The function is pickled once (cloudpickle) and uploaded once; each
call uploads its arguments. A function defined outside installed packages (your script,
your project's modules) is pickled by value, so agents need not have its source.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

import cloudpickle

from sandrun.client.calls import Awaitable, call_fields, merge_call
from sandrun.errors import ArtifactNotFound, IllegalTransition
from sandrun.runner import FUNCTION_INPUT

if TYPE_CHECKING:
    from sandrun.client.client import Client
    from sandrun.client.job import Job

P = ParamSpec("P")
R = TypeVar("R")


class Owner(Protocol):
    """What a function needs of its app (`sandrun.client.app.App`)."""

    name: str

    @property
    def client(self) -> Client: ...


class Function(Generic[P, R]):
    def __init__(
        self, app: Owner, fn: Callable[P, R], fields: dict[str, Any], upload_code: bool
    ) -> None:
        self.app = app
        self.fn = fn
        self.fields = fields
        self.upload_code = upload_code
        self.name = fn.__name__
        self._digest: str | None = None
        functools.update_wrapper(self, fn)
        pickle_by_value_if_local(sys.modules.get(fn.__module__))

    def _payload(self) -> object:
        """What a call's `function.pkl` holds (see `sandrun.runner`)."""
        return self.fn

    def _method(self) -> str | None:
        """The method a call runs on the payload's instance (None: the payload is called)."""
        return None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run here, in this process, as a plain call."""
        return self.fn(*args, **kwargs)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run as a job and return its value (or raise what it raised)."""
        return self.spawn(*args, **kwargs).get()

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        """Submit a call and return at once with its handle."""
        return self._spawn(args, kwargs)

    def _spawn(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCall[R]:
        return self._spawn_many([(args, kwargs)])[0]

    def _spawn_many(
        self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[FunctionCall[R]]:
        """Submit calls together (one request per 1,000); the function is sent once."""
        try:
            return self._submit(calls)
        except ArtifactNotFound as exc:
            if not (exc.field or "").endswith(f"inputs.{FUNCTION_INPUT}"):
                raise
            self._digest = None  # retention removed it since it was sent: send it again
            return self._submit(calls)

    def _submit(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[FunctionCall[R]]:
        client = self.app.client
        if self._digest is None:  # uploaded once, not checked on every call
            self._digest = client.transport.put_blob(cloudpickle.dumps(self._payload()))
        labels = {"app": _label(self.app.name), "function": _label(self.name)}
        name = f"{labels['app']}-{labels['function']}".replace(".", "-")[:128]  # no dots
        spec = {"name": name, "labels": labels}
        digest, method = self._digest, self._method()
        specs = [
            merge_call(
                {**spec, **self.fields},
                call_fields(client.transport, args, kwargs, function_digest=digest, method=method),
            )
            for args, kwargs in calls
        ]
        jobs = client.submit_many(specs, upload_code=self.upload_code)
        return [FunctionCall(job) for job in jobs]

    def map(
        self,
        *iterables: Iterable[Any],
        return_exceptions: bool = False,
        progress: bool | None = None,
    ) -> MapCalls[R]:
        """Call once per item (several iterables: zipped, as the builtin map), all in
        parallel, submitted now; iterate for the results in order. A call that raised
        raises there (its remaining calls are cancelled), or with `return_exceptions` is
        yielded. A progress bar shows on a terminal unless `progress=False`. Passed to
        another call (`total.remote(square.map(xs))`) it is the list of values, waited
        for by that call's job: the client never holds them."""
        calls = self._spawn_many([(args, {}) for args in zip(*iterables, strict=False)])
        return MapCalls(calls, self.name, return_exceptions, progress)


class MapCalls(Awaitable, Generic[R]):
    """The calls of one `.map()`: an iterator of their results, in order."""

    def __init__(
        self,
        calls: list[FunctionCall[R]],
        name: str,
        return_exceptions: bool,
        progress: bool | None,
    ) -> None:
        self.calls = calls
        self.awaits = [c.id for c in calls]
        self._results = self._collect(name, return_exceptions, progress)

    def __iter__(self) -> Iterator[R | BaseException]:
        return self

    def __next__(self) -> R | BaseException:
        return next(self._results)

    def close(self) -> None:
        """Stop: the calls not yet read are cancelled."""
        self._results.close()

    def _collect(
        self, name: str, return_exceptions: bool, progress: bool | None
    ) -> Generator[R | BaseException, None, None]:
        show = sys.stderr.isatty() if progress is None else progress
        done = 0
        try:
            with _progress(show, len(self.calls), name) as advance:
                for call in self.calls:
                    try:
                        value: R | BaseException = call.get()
                    except Exception as exc:
                        if not return_exceptions:
                            raise
                        value = exc
                    done += 1
                    advance()
                    yield value
        finally:
            for call in self.calls[done:]:
                call.cancel()


class FunctionCall(Awaitable, Generic[R]):
    """One submitted call: `.get()` its value, `.cancel()` it, or see its `.job`. Passed
    to another call, that call waits for it and receives its value."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.awaits = job.id

    @property
    def id(self) -> str:
        return self.job.id

    def get(self, timeout: float | None = None) -> R:
        value: R = self.job.result(timeout)
        return value

    def cancel(self) -> None:
        """Cancel the call unless it has already ended."""
        with contextlib.suppress(IllegalTransition):
            self.job.cancel()


def invoke(
    file: str | Path,
    function: str,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    **fields: Any,
) -> Any:
    """`connect().invoke(...)`: run `function` from a Python file that does not import
    sandrun, as a job (gpu=..., cpus=...), and return its value."""
    from sandrun.client.client import connect

    with connect() as client:
        return client.invoke(file, function, args, kwargs, **fields)


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60] or "function"


_INSTALLED = {
    os.path.realpath(p)
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
}


def pickle_by_value_if_local(module: ModuleType | None) -> None:
    # Agents have the installed packages, not your project: send its code with the call.
    path = getattr(module, "__file__", None)
    if module is None or path is None or module.__name__.split(".")[0] in ("__main__", "sandrun"):
        return  # __main__ is pickled by value anyway; agents have sandrun
    real = os.path.realpath(path)
    if not any(real.startswith(root + os.sep) for root in _INSTALLED):
        cloudpickle.register_pickle_by_value(module)


@contextmanager
def _progress(show: bool, total: int, what: str) -> Iterator[Callable[[], None]]:
    if not show:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(f"{what}.map", total=total)
        yield lambda: progress.advance(task)
