"""Pipelines in the SDK: a run's handle, a definition built in Python, and YAML files.

    with sandrun.Pipeline("ml") as p:
        prep = p.step("prep", shell="python3 prep.py", outputs=["processed.parquet"])
        train = p.step("train", ["python3", "train.py"], gpus="2xa100",
                       inputs={"data.parquet": prep.output("processed.parquet")})
        p.step("evaluate", ["python3", "eval.py"], when=f"{train.state} == 'completed'",
               inputs={"model.pt": train.output("model.pt")})
    p.run.wait()

A step that reads another's output or result needs it without saying so; the same
definition as a YAML file runs with `sandrun pipeline run FILE`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from sandrun.client.calls import Awaitable, call_fields, merge_call
from sandrun.client.client import Client, connect
from sandrun.client.functions import pickle_by_value_if_local
from sandrun.client.runs import Run
from sandrun.errors import InvalidSpec
from sandrun.runner import ITEM_ENV


class Step(Awaitable):
    """A step being defined; what later steps read of it. Given as an argument to a call
    step (`p.call`), that step needs it and receives what it returned."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.awaits = f"steps.{name}"

    @property
    def ref(self) -> str:
        """The step in a `when:` expression: `f"{prep.ref}.result.rows > 10"`."""
        return f"steps.{self.name}"

    @property
    def state(self) -> str:
        return f"{self.ref}.state"

    def output(self, path: str) -> str:
        """This step's output `path`, as a later step's input (passed by digest)."""
        return "{{ " + f"{self.ref}.outputs[{path!r}]" + " }}"

    @property
    def result(self) -> str:
        """This step's declared result, in a later step's fields (`| tojson` for JSON)."""
        return "{{ " + f"{self.ref}.result" + " }}"


class Pipeline:
    """A pipeline built in Python; submitted when its `with` block ends (`.run`)."""

    def __init__(
        self,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        code: str | Path | None = None,
        client: Client | None = None,
    ) -> None:
        """`code`: a directory uploaded as the working directory of each step that brings
        none; `client`: where it runs (default `sandrun.connect()`)."""
        self.name = name
        self.code = code
        self.params = dict(params or {})
        self.defaults = dict(defaults or {})
        self.client = client
        self.steps: dict[str, dict[str, Any]] = {}
        self.run: Run | None = None

    def step(
        self,
        name: str,
        command: list[str] | str | None = None,
        /,
        *,
        needs: list[Step | str] | None = None,
        **fields: Any,
    ) -> Step:
        """Add a step: a job's fields (`shell=`, `gpus=`, `inputs=`…) and the step's own
        (`when=`, `for_each=`, `max_parallel=`, `on_item_failure=`, `cache=`)."""
        if name in self.steps:
            raise InvalidSpec(f"steps.{name}: a step of that name exists", field=f"steps.{name}")
        if isinstance(command, str):
            fields["shell"] = command
        elif command is not None:
            fields["command"] = list(command)
        if needs:
            fields["needs"] = [n.name if isinstance(n, Step) else n for n in needs]
        self.steps[name] = fields
        return Step(name)

    def call(
        self,
        name: str,
        function: Callable[..., Any],
        /,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Step:
        """Add a step that calls `function` (an `@app.function`, with its resources, or a
        plain function) with `args` and `kwargs`: steps among them are needed, and each
        gives what it returned (a fan-out step: the list of its items' values). The value
        this one returns is its `result` (if it is JSON) and what later calls get. `fields`
        are the step's (`when=`, `gpus=`...); with `for_each=`, one call per item, which
        `sandrun.item` among the arguments stands for."""
        client = self._client()
        if fields.get("for_each") is not None:  # each item's value, for `sandrun.item`
            fields["env"] = {**fields.get("env", {}), ITEM_ENV: "{{ item | tojson }}"}
        fn = getattr(function, "fn", function)
        pickle_by_value_if_local(sys.modules.get(fn.__module__))
        digest = client.transport.put_blob(cloudpickle.dumps(fn))
        call = call_fields(
            client.transport, tuple(args), dict(kwargs or {}), function_digest=digest, value=True
        )
        base = dict(getattr(function, "fields", {}))
        return self.step(name, **merge_call({**base, **fields}, call))

    def _client(self) -> Client:
        if self.client is None:
            self.client = connect()
        return self.client

    @property
    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "steps": self.steps}
        if self.params:
            out["params"] = self.params
        if self.defaults:
            out["defaults"] = self.defaults
        return out

    def submit(self, params: dict[str, Any] | None = None) -> Run:
        self.run = self._client().run_pipeline(self.definition, params, code=self.code)
        return self.run

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.submit()
