"""One error registry: every sandrun exception lives in `sandrun.errors`, each code names
one class, and a client decodes every code to its class whatever it has imported."""

from __future__ import annotations

import importlib
import pkgutil

import sandrun
from sandrun.error_codes import CODES, error_for_code
from sandrun.errors import SandrunError


def _every_module() -> None:
    for info in pkgutil.walk_packages(sandrun.__path__, "sandrun."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def _classes(base: type[SandrunError]) -> list[type[SandrunError]]:
    return [base, *(c for sub in base.__subclasses__() for c in _classes(sub))]


def test_every_exception_is_in_the_registry_module() -> None:
    _every_module()
    elsewhere = [f"{c.__module__}.{c.__name__}" for c in _classes(SandrunError)]
    assert [n for n in elsewhere if not n.startswith("sandrun.errors.")] == []


def test_each_code_names_one_class_and_decodes_to_it() -> None:
    classes = _classes(SandrunError)
    codes = [c.code for c in classes]
    assert sorted(c for c in set(codes) if codes.count(c) > 1) == []
    for cls in classes:
        assert error_for_code(cls.code) is cls
        assert CODES[cls.code] is cls
    assert error_for_code("no_such_code") is SandrunError
