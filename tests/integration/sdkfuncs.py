"""Functions the SDK tests run remotely. A module of the project, not an installed
package: the SDK pickles it by value, so agents need not have it."""

from __future__ import annotations

import os
import sys


class Unpicklable(Exception):
    def __reduce__(self) -> object:
        raise TypeError("this exception refuses to be pickled")


def square(x: int) -> int:
    return x * x


def divide(a: float, b: float) -> float:
    return a / b


def refuse() -> None:
    raise Unpicklable("cannot travel")


def die(code: int) -> None:
    print("about to die", flush=True)
    os._exit(code)


def describe() -> dict[str, object]:
    return {"python": sys.version_info[:2], "cwd": os.getcwd()}


def leave(code: int) -> None:
    sys.exit(code)


def total(values: list[int], start: int = 0) -> int:
    return start + sum(values)


def pair(a: int, b: object) -> list[object]:
    return [a, b]
