"""`sandrun volume ...`, `sandrun env ...` and `sandrun secret ...` (docs/data.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sandrun.cli import render
from sandrun.cli.options import JsonOpt

volume_app = typer.Typer(help="Named volumes: storage of yours that jobs mount and keep.")
secret_app = typer.Typer(help="Secrets: values of yours that jobs get, sealed at rest.")
env_app = typer.Typer(help="Named Python environments, built by agents with uv once.")

VolumeArg = Annotated[str, typer.Argument(metavar="NAME", help="The volume's name (or id).")]


@volume_app.command("create")
def volume_create(
    name: Annotated[str, typer.Argument(help="Its name: letters, digits, '-' or '_'.")],
    size: Annotated[str, typer.Option(help="How much it may hold, e.g. 100GB.")] = "10GB",
    shared: Annotated[
        bool, typer.Option("--shared", help="Several jobs may write it at once.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Create a volume; jobs mount it with `volumes: [{name: NAME}]`."""
    from sandrun.client import connect

    with connect() as client:
        volume = client.create_volume(name, size=size, shared=shared)
    if json:
        render.print_json(volume.model_dump(mode="json"))
    else:
        render.out.print(f"{volume.name} ({volume.id}): {volume.size_mb} MiB")


@volume_app.command("list")
def volume_list(json: JsonOpt = False) -> None:
    """Your volumes: size, where their bytes live, and how many unfinished jobs use each."""
    from sandrun.client import connect

    with connect() as client:
        volumes = client.list_volumes()
    if json:
        render.print_json([v.model_dump(mode="json") for v in volumes])
        return
    table = Table("NAME", "ID", "SIZE", "SHARED", "NODE", "IN USE", box=None)
    for v in volumes:
        size = f"{v.size_mb / 1024:g} GiB" if v.size_mb >= 1024 else f"{v.size_mb} MiB"
        shared = "yes" if v.shared else "no"
        table.add_row(v.name, v.id, size, shared, v.node or "-", str(v.in_use))
    render.out.print(table)


@volume_app.command("delete")
def volume_delete(name: VolumeArg) -> None:
    """Delete a volume (refused while an unfinished job mounts it); its bytes go too."""
    from sandrun.client import connect

    with connect() as client:
        volume = client.delete_volume(name)
    render.out.print(f"deleted volume {volume.name}")


@volume_app.command("ls")
def volume_ls(
    name: VolumeArg,
    path: Annotated[str, typer.Argument(help="A directory in it.")] = "",
    json: JsonOpt = False,
) -> None:
    """What the volume holds (under PATH), as a job reading it sees it."""
    from sandrun.client import connect
    from sandrun.client.volumes import list_volume

    with connect() as client:
        entries = list_volume(client, name, path)
    if json:
        render.print_json([e.__dict__ for e in entries])
        return
    for e in entries:
        render.out.print(f"{e.kind:4} {e.size:>12} {e.path}", highlight=False)


@volume_app.command("put")
def volume_put(
    name: VolumeArg,
    local: Annotated[Path, typer.Argument(help="A local file or directory.")],
    path: Annotated[str, typer.Argument(help="Where in the volume (default: its name).")] = "",
) -> None:
    """Copy a local file or directory into the volume."""
    from sandrun.client import connect
    from sandrun.client.volumes import put

    with connect() as client:
        put(client, name, local, path)
    render.out.print(f"copied {local} to {name}:{path or local.name}")


@volume_app.command("get")
def volume_get(
    name: VolumeArg,
    path: Annotated[str, typer.Argument(help="A file or directory in the volume.")],
    dest: Annotated[Path, typer.Argument(help="A local directory.")] = Path("."),
) -> None:
    """Copy a file or directory of the volume here (or into DEST)."""
    from sandrun.client import connect
    from sandrun.client.volumes import get

    with connect() as client:
        got = get(client, name, path, dest)
    render.out.print(f"copied {len(got)} file(s) to {dest}")


@env_app.command("create")
def env_create(
    name: Annotated[str, typer.Argument(help="Its name: jobs say `environment: NAME`.")],
    requirements: Annotated[
        Path | None, typer.Option("--requirements", "-r", help="A requirements.txt.")
    ] = None,
    package: Annotated[
        list[str] | None, typer.Option("--package", "-p", help="A requirement (repeatable).")
    ] = None,
    python: Annotated[str | None, typer.Option(help="Its Python, e.g. 3.12.")] = None,
) -> None:
    """Name a Python version and requirements (replacing one of that name)."""
    from sandrun.client import connect

    with connect() as client:
        made = client.create_environment(name, package, python, requirements)
    count = len(made.spec.requirements)
    render.out.print(f"environment {made.name}: {count} requirement(s)")


@env_app.command("list")
def env_list(json: JsonOpt = False) -> None:
    """Your named environments."""
    from sandrun.client import connect

    with connect() as client:
        found = client.list_environments()
    if json:
        render.print_json([e.model_dump(mode="json") for e in found])
        return
    table = Table("NAME", "PYTHON", "REQUIREMENTS", box=None)
    for e in found:
        listed = ", ".join(e.spec.requirements)
        table.add_row(e.name, e.spec.python or "agent's", listed[:60])
    render.out.print(table)


@env_app.command("delete")
def env_delete(name: Annotated[str, typer.Argument(help="The environment's name.")]) -> None:
    from sandrun.client import connect

    with connect() as client:
        client.delete_environment(name)
    render.out.print(f"deleted environment {name}")


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="Its name (the env var jobs see).")],
) -> None:
    """Set a secret from standard input (prompted for, unechoed, on a terminal)."""
    from sandrun.client import connect

    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value of {name}: ")
    else:
        value = sys.stdin.read().removesuffix("\n")
    with connect() as client:
        client.set_secret(name, value)
    render.out.print(f"set secret {name}")


@secret_app.command("list")
def secret_list(json: JsonOpt = False) -> None:
    """Your secrets' names (never their values)."""
    from sandrun.client import connect

    with connect() as client:
        found = client.list_secrets()
    if json:
        render.print_json([s.model_dump(mode="json") for s in found])
        return
    for s in found:
        render.out.print(s.name)


@secret_app.command("delete")
def secret_delete(name: Annotated[str, typer.Argument(help="The secret's name.")]) -> None:
    from sandrun.client import connect

    with connect() as client:
        client.delete_secret(name)
    render.out.print(f"deleted secret {name}")
