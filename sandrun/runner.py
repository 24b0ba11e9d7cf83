"""Runs one function call inside a job: `"$SANDRUN_PYTHON" -m sandrun.runner [DIR]`.

The client put what to call in $SANDRUN_CALL (JSON: the Python it was made with; a
source file and function name, if the function is not pickled; a method's name, for a
method of an `@app.cls` class), and in DIR (default `.sandrun`): `args.pkl` (cloudpickled
args and kwargs) and `function.pkl` (a cloudpickled function, unless it names a file; for a
method, the class and its constructor's args and kwargs). A method's instance is made and
its `@enter` methods run first: here per call, or once per warm worker (`ENTERED`, set by
the fork server before it forks the call). The runner writes
`result.json` (whether it returned, the exception's type, message and traceback) and
`result.pkl` (the value or the exception itself, if it pickles). It imports only the
standard library and cloudpickle, so it starts fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

CALL_DIR = ".sandrun"
CALL_ENV = "SANDRUN_CALL"
SHELL = f'exec "$SANDRUN_PYTHON" -m sandrun.runner {CALL_DIR}'  # a call job's `shell`
ARGS_INPUT = f"{CALL_DIR}/args.pkl"  # a call's own arguments, as the job's input
FUNCTION_INPUT = f"{CALL_DIR}/function.pkl"  # what it calls (or the class and its arguments)
AFTER_DIR = f"{CALL_DIR}/after"  # N.pkl: what the Nth call it waited for returned
VALUE_OUTPUT = f"{CALL_DIR}/value.json"  # the value as JSON (null if it is not JSON), if asked
MAX_VALUE = 64 << 10  # bytes of JSON a value may take there
ENTER_MARK = "__sandrun_enter__"  # set on a class's methods by `sandrun.enter()`
EXIT_RAISED = 1
EXIT_MISMATCH = 3


def main(argv: list[str]) -> int:
    where = Path(argv[1] if len(argv) > 1 else CALL_DIR)
    call = json.loads(os.environ[CALL_ENV])
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if call["python"] != have:
        _write(
            where,
            {
                "ok": False,
                "kind": "python_version",
                "type": "PythonVersionMismatch",
                "message": f"the call was serialized by Python {call['python']}, but this agent "
                f"runs Python {have}; functions travel as bytecode, which only the same "
                "version can load",
                "traceback": "",
            },
        )
        return EXIT_MISMATCH
    import cloudpickle

    sys.path.insert(0, os.getcwd())  # the uploaded code, as `python script.py` would see it
    try:
        function = _load_function(where, call)
        args, kwargs = cloudpickle.loads((where / "args.pkl").read_bytes())
        args, kwargs = _awaited(args, where), _awaited(kwargs, where)
        value = function(*args, **kwargs)
    except BaseException as exc:  # whatever it raised goes back to the caller
        report = {
            "ok": False,
            "kind": "raised",
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
        _write(where, report, _pickled(cloudpickle, exc))
        return EXIT_RAISED
    data = _pickled(cloudpickle, value)
    if data is None:
        _write(
            where,
            {
                "ok": False,
                "kind": "unpicklable",
                "type": "TypeError",
                "message": f"the function returned a {type(value).__name__}, which cloudpickle "
                "cannot serialize",
                "traceback": traceback.format_exc(),
            },
        )
        return EXIT_RAISED
    _write(where, {"ok": True}, data)
    if call.get("value"):
        (where / "value.json").write_text(_as_json(value))
    return 0


class Awaited:
    """In a call's arguments, where the value another call returned goes: the client
    puts one for each call (`FunctionCall`) it was given, and the job waits for them."""

    def __init__(self, index: int) -> None:
        self.index = index


class Item:
    """In a fan-out step's call arguments (`p.call(..., for_each=...)`): that item's value,
    which the step's job carries as JSON in $SANDRUN_ITEM."""


ITEM_ENV = "SANDRUN_ITEM"
item = Item()  # `sandrun.item`


def _awaited(value: Any, where: Path) -> Any:
    """`value` with each `Awaited` in it (in lists, tuples and dict values) replaced by what
    that call returned (a fan-out's: a directory of one file per item, read as a list,
    None for an item that returned nothing), and each `Item` by the item's value."""
    if isinstance(value, Awaited):
        import cloudpickle

        found = where / "after" / f"{value.index}.pkl"
        if not found.is_dir():
            return cloudpickle.loads(found.read_bytes())
        names = {int(p.name): p for p in found.iterdir() if p.name.isdigit()}
        count = max(names, default=-1) + 1
        return [
            cloudpickle.loads(names[i].read_bytes()) if i in names else None for i in range(count)
        ]
    if isinstance(value, Item):
        return json.loads(os.environ[ITEM_ENV])
    if type(value) in (list, tuple):  # exactly: a subclass may not rebuild from items
        return type(value)(_awaited(v, where) for v in value)
    if type(value) is dict:
        return {k: _awaited(v, where) for k, v in value.items()}
    return value


def _as_json(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return "null"
    return text if len(text) <= MAX_VALUE else "null"


class Entered:
    """A warm worker's instance of its class, made once (or why it could not be)."""

    def __init__(self, where: Path) -> None:
        self.instance: Any = None
        self.error: BaseException | None = None
        try:
            self.instance = instance(where)
        except BaseException as exc:  # each call of this worker raises it
            self.error = exc


ENTERED: Entered | None = None


def instance(where: Path) -> Any:
    """A method call's instance: the class made with its args, its `@enter` methods run."""
    import cloudpickle

    cls, args, kwargs = cloudpickle.loads((where / "function.pkl").read_bytes())
    return entered(cls, args, kwargs)


def entered(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`cls` made with `args` and `kwargs`, its `@enter` methods run (the client's local
    calls make their instance so too)."""
    made = cls(*args, **kwargs)
    for name in enter_methods(cls):
        getattr(made, name)()
    return made


def enter_methods(cls: type) -> list[str]:
    """The names of `cls`'s `@enter` methods, base classes' first, each in order of
    definition."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            if getattr(member, ENTER_MARK, False) and name not in names:
                names.append(name)
    return names


def _load_function(where: Path, call: dict[str, Any]) -> Any:
    import cloudpickle

    if "method" in call:
        if ENTERED is None:
            return getattr(instance(where), call["method"])
        if ENTERED.error is not None:
            raise ENTERED.error  # its @enter failed: the worker retires after this call
        return getattr(ENTERED.instance, call["method"])
    if "file" not in call:
        return cloudpickle.loads((where / "function.pkl").read_bytes())
    path = Path(call["file"])
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    function = getattr(module, call["function"], None)
    if not callable(function):
        raise AttributeError(f"{path} has no function named {call['function']!r}")
    return function


def _pickled(cloudpickle: Any, value: object) -> bytes | None:
    try:
        data: bytes = cloudpickle.dumps(value)
    except Exception:  # reported as text instead
        return None
    return data


def _write(where: Path, report: dict[str, Any], data: bytes | None = None) -> None:
    if data is not None:
        (where / "result.pkl").write_bytes(data)
    (where / "result.json").write_text(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
