"""The registry of error codes: the exception class for each stable `code` in
`errors.py`, for clients and agents decoding what a server sent."""

from __future__ import annotations

from collections.abc import Sequence

import sandrun.errors.data  # its classes are in the registry too
import sandrun.errors.lifecycle  # noqa: F401
from sandrun.errors import SandrunError


def _every(base: type[SandrunError]) -> list[type[SandrunError]]:
    return [base, *(c for sub in base.__subclasses__() for c in _every(sub))]


# Every class is defined in sandrun.errors (and its parts), imported above.
CODES: dict[str, type[SandrunError]] = {}
for _cls in _every(SandrunError):
    CODES.setdefault(_cls.code, _cls)  # a sub-base's code is its first class's


def error_for_code(code: str) -> type[SandrunError]:
    """The exception class with this stable `code` (for clients decoding server errors)."""
    return CODES.get(code, SandrunError)


def rebuilt(
    code: str, message: str | None, field: str | None = None, suggestions: Sequence[str] = ()
) -> SandrunError:
    """The error a server sent (as its code, message, field and suggestions), raisable here."""
    cls = error_for_code(code)
    return cls(message or (cls.__doc__ or code).strip(), field=field, suggestions=suggestions)
