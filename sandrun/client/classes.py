"""Remote classes: `@app.cls(gpu="a100")`, `@sandrun.enter()`, then
`Model(args).predict.remote(x)` (as Modal's `@app.cls`).

A method call is a function call (see `functions.py`) whose pickled payload is the class
with its constructor's arguments. The agent keeps a warm worker per such payload: it makes
the instance and runs its `@enter` methods once, then forks the entered instance for each
call, so a call sees what `@enter` loaded but nothing an earlier call changed. Without a
warm worker (GPU jobs, an agent with warm workers off) each call makes its own instance.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sandrun.client.functions import Function, Owner, pickle_by_value_if_local
from sandrun.runner import ENTER_MARK, entered

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def enter(fn: F | None = None) -> Any:
    """Mark a method to run once per warm worker, after the instance is made and before its
    calls: `@sandrun.enter()` (or `@sandrun.enter`)."""

    def mark(method: F) -> F:
        setattr(method, ENTER_MARK, True)
        return method

    return mark(fn) if fn is not None else mark


def method(fn: F | None = None) -> Any:
    """Mark a method callable remotely: `@sandrun.method()`. Optional (any public method
    is), kept so that classes written for Modal read the same."""
    return fn if fn is not None else (lambda method: method)


class Cls(Generic[T]):
    """A class decorated with `@app.cls(...)`: call it to get a handle on an instance."""

    def __init__(self, app: Owner, cls: type[T], fields: dict[str, Any], upload_code: bool) -> None:
        self.app = app
        self.cls = cls
        self.fields = fields
        self.upload_code = upload_code
        functools.update_wrapper(self, cls, updated=())
        pickle_by_value_if_local(sys.modules.get(cls.__module__))

    def __call__(self, *args: Any, **kwargs: Any) -> Obj[T]:
        """A handle on the instance made with these arguments, wherever it runs (they are
        pickled with the class: each distinct set has workers of its own)."""
        return Obj(self, args, kwargs)


class Obj(Generic[T]):
    """An instance of a remote class: `obj.method.remote(...)`, `.spawn`, `.map`, or
    `obj.method(...)` to run here, on an instance made (and entered) here once."""

    def __init__(self, owner: Cls[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._args = args
        self._kwargs = kwargs
        self._methods: dict[str, Method] = {}
        self._local: T | None = None

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._methods:
            member = getattr(self._owner.cls, name, None)
            if not callable(member) or getattr(member, ENTER_MARK, False):
                raise AttributeError(
                    f"{self._owner.cls.__name__} has no method {name!r} to call remotely"
                )
            self._methods[name] = Method(self, name)
        return self._methods[name]

    def local(self) -> T:
        """The instance made here (its `@enter` methods run), once."""
        if self._local is None:
            self._local = entered(self._owner.cls, self._args, self._kwargs)
        return self._local


class Method(Function[..., Any]):
    """One method of a remote instance, called as a function is."""

    def __init__(self, obj: Obj[Any], name: str) -> None:
        owner = obj._owner
        self.obj = obj
        self.method = name
        fn = getattr(owner.cls, name)
        super().__init__(owner.app, self._run_here, owner.fields, owner.upload_code)
        self.name = f"{owner.cls.__name__}.{name}"
        self.__doc__ = fn.__doc__

    def _run_here(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.obj.local(), self.method)(*args, **kwargs)

    def _payload(self) -> object:
        return (self.obj._owner.cls, self.obj._args, self.obj._kwargs)

    def _method(self) -> str | None:
        return self.method
