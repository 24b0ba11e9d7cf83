"""What the kernel lets one exec carry, checked at submit: past it, every attempt would fail
to start ("Argument list too long") on whichever node took it."""

from __future__ import annotations

from sandrun.errors import InvalidSpec

# Linux's MAX_ARG_STRLEN: one argument or one KEY=VALUE, its NUL included.
MAX_STRING = 32 * 4096
# The job's argv and env together, of the 2 MiB a default 8 MiB stack gives (ARG_MAX); the
# rest is the sandbox's own arguments and the variables the agent sets.
MAX_TOTAL = 1 << 20


def check_exec_size(argv: list[str], env: dict[str, str], program: str) -> None:
    """Refuse a program (`program`: the spec field that holds it) or environment the
    kernel would not exec, naming the field."""
    for i, arg in enumerate(argv):
        if len(arg.encode()) + 1 > MAX_STRING:
            field = program if program != "command" else f"command.{i}"
            raise _too_long(field, len(arg.encode()))
    for key, value in env.items():
        if len(f"{key}={value}".encode()) + 1 > MAX_STRING:
            raise _too_long(f"env.{key}", len(value.encode()))
    # Each string costs its bytes, its NUL and a pointer.
    sizes = {
        program: sum(len(a.encode()) + 9 for a in argv),
        "env": sum(len(f"{k}={v}".encode()) + 9 for k, v in env.items()),
    }
    if sum(sizes.values()) > MAX_TOTAL:
        field = max(sizes, key=lambda f: sizes[f])
        raise InvalidSpec(
            f"{field}: the program's arguments and environment take "
            f"{sum(sizes.values()) // 1024} KiB; an exec holds at most {MAX_TOTAL // 1024} KiB",
            field=field,
            suggestions=["pass large data as a file: inputs, code, or an upload"],
        )


def _too_long(field: str, size: int) -> InvalidSpec:
    return InvalidSpec(
        f"{field}: {size // 1024} KiB is longer than one argument or variable may be "
        f"({MAX_STRING // 1024} KiB with its name)",
        field=field,
        suggestions=["pass large data as a file: inputs, code, or an upload"],
    )
