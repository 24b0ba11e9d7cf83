"""A job's software: a Python version and requirements the agent builds into an environment
with uv (once per content, shared read-only), or the name of one created ahead.

Requirements are package specifiers only: never an option (`-r`, `-e`, `--index-url`), a
local path or a `file:` URL, since the agent resolves them on its own disk and network.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from sandrun.errors import InvalidSpec
from sandrun.spec.base import Strict
from sandrun.spec.fields import INPUT_PATH, NAME_RE

PYTHON_VERSION = r"^3\.[0-9]{1,2}(\.[0-9]{1,2})?$"
# A project name first; no `file:`, and a direct reference (`name @ URL`) over https only.
REQUIREMENT = r"^(?!.*file:)(?!.*@(?![ \t]*(?:git\+)?https://))[A-Za-z0-9][^\x00\n\r]{0,299}$"
MAX_REQUIREMENTS = 500
ENV_FILES = ("requirements.txt", "pyproject.toml")


def check_requirement(line: str, where: str = "requirement") -> str:
    if not re.match(REQUIREMENT, line):
        raise ValueError(
            f"{where} {line[:80]!r} is not a package specifier (e.g. 'numpy>=2', "
            "'torch==2.5'); options, local paths and file: URLs are not taken"
        )
    return line


class Packages(Strict):
    """`python` (default: the agent's own version) with `requirements`: what a named
    environment holds."""

    python: str | None = Field(default=None, json_schema_extra={"pattern": PYTHON_VERSION})
    requirements: list[str] = Field(
        default_factory=list,
        max_length=MAX_REQUIREMENTS,
        json_schema_extra={"items": {"type": "string", "pattern": REQUIREMENT}},
    )

    @model_validator(mode="after")
    def _check_packages(self) -> Packages:
        if self.python is not None and not re.match(PYTHON_VERSION, self.python):
            raise ValueError(f"python {self.python!r} is not a version such as '3.12'")
        for i, line in enumerate(self.requirements):
            check_requirement(line, f"requirements.{i}")
        return self


class Environment(Packages):
    """A job's environment: packages, and/or those of a `requirements.txt` or
    `pyproject.toml` in the job's code (`file`)."""

    file: str | None = Field(
        default=None,
        json_schema_extra={"pattern": rf"(?:^|/)(?:{'|'.join(map(re.escape, ENV_FILES))})$"},
    )

    @model_validator(mode="after")
    def _check_file(self) -> Environment:
        if self.file is not None and (
            not re.match(INPUT_PATH, self.file) or not self.file.endswith(ENV_FILES)
        ):
            raise ValueError(
                f"file {self.file!r} must be a requirements.txt or pyproject.toml relative "
                "to the job's working directory"
            )
        return self


def _named_or_spec(value: object) -> object:
    if isinstance(value, str) and not NAME_RE.match(value):
        raise ValueError(f"environment {value!r} is not a name (letters, digits, '-', '_')")
    return value


EnvironmentName = Annotated[str, WithJsonSchema({"type": "string", "pattern": NAME_RE.pattern})]
EnvironmentField = Annotated[Environment | EnvironmentName | None, BeforeValidator(_named_or_spec)]


def requirements_of(text: str, name: str) -> list[str]:
    """The requirements a file of the job's code lists (a requirements.txt, or a
    pyproject.toml's `[project].dependencies`), each checked as a spec's are."""
    if name.endswith("pyproject.toml"):
        import tomllib

        try:
            project: dict[str, Any] = tomllib.loads(text).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{name}: {exc}") from None
        return [check_requirement(str(d), name) for d in project.get("dependencies", [])]
    lines = [x.split(" #", 1)[0].strip() for x in text.splitlines()]
    return [check_requirement(x, name) for x in lines if x and not x.startswith("#")]


def environment_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """SDK shorthands as the spec's `environment`: `requirements=[...]` and `python="3.12"`
    (an environment built from them), or `image="NAME"` (a named environment; sandrun
    runs no container images, and says so for one)."""
    out = dict(fields)
    requirements, python = out.pop("requirements", None), out.pop("python", None)
    image = out.pop("image", None)
    ways = [image is not None, requirements is not None or python is not None]
    if sum([*ways, out.get("environment") is not None]) > 1:
        raise InvalidSpec(
            "give one of environment, image, or requirements/python", field="environment"
        )
    if image is not None:
        if not isinstance(image, str) or not NAME_RE.match(image):
            raise InvalidSpec(
                f"image {image!r} looks like a container image: sandrun runs jobs in a "
                "sandbox on the node, not in containers; name an environment instead",
                field="image",
                suggestions=["sandrun env create NAME --requirements requirements.txt",
                             "then image='NAME' (or environment='NAME')"],
            )  # fmt: skip
        out["environment"] = image
    elif requirements is not None or python is not None:
        built = {"requirements": list(requirements or [])}
        out["environment"] = {**built, **({"python": python} if python else {})}
    return out
