"""The outputs an agent names in its result: checked before the end is taken."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from sandrun.errors import ValidationError
from sandrun.models import OutputFile


def check_output_paths(outputs: Sequence[OutputFile]) -> None:
    """An agent names outputs: each must be a normalised relative path inside the working
    directory, named once (a client writes them under its download directory)."""
    seen: set[str] = set()
    for i, out in enumerate(outputs):
        path = out.path
        clean = PurePosixPath(path).as_posix()
        parts = path.split("/")
        if clean != path or path.startswith("/") or "\0" in path or {"", ".", ".."} & set(parts):
            raise ValidationError(
                f"output path {path!r} is not a normalised relative path inside the working "
                "directory",
                field=f"result.outputs.{i}.path",
            )
        if path in seen:
            raise ValidationError(
                f"output path {path!r} is listed twice", field=f"result.outputs.{i}.path"
            )
        seen.add(path)
