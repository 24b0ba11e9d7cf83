"""`sandrun pipeline …`: run a pipeline file, watch its steps, read a step's logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandrun.cli import render
from sandrun.cli.options import JsonOpt

if TYPE_CHECKING:
    from sandrun.client import Client, Run
    from sandrun.pipeline.models import PipelineStatus

pipeline_app = typer.Typer(
    help="Pipelines: steps that need steps, pass outputs, branch and fan out.",
    no_args_is_help=True,
)
RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run's id.", show_default=False)]
WaitOpt = Annotated[
    bool, typer.Option("--wait", metavar="", help="Wait for the run; exit 0 only if it completed.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="A parameter (`params.KEY`); YAML values."),
]
STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
    "running": "blue",
    "waiting": "dim yellow",
    "pending": "yellow",
    "scheduled": "cyan",
}


def _client() -> Client:
    from sandrun.client import connect

    return connect()


@pipeline_app.command("run")
def run(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A pipeline YAML file.")],
    set_: SetOpt = None,
    code: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Uploaded as each step's working directory (default: the file's directory).",
        ),
    ] = None,
    no_code: Annotated[
        bool, typer.Option("--no-code", metavar="", help="Upload nothing: steps bring their own.")
    ] = False,
    wait: WaitOpt = False,
    json: JsonOpt = False,
) -> None:
    """Start a run of a pipeline file and print its id (with --wait, wait and show its steps)."""
    with _client() as client:
        folder = None if no_code else (code or file.resolve().parent)
        _started(client.run_pipeline(file, _params(set_ or []), code=folder), wait, json)


@pipeline_app.command()
def status(run_id: RunId, json: JsonOpt = False) -> None:
    """A run's state and each step's, as a tree of what needs what."""
    with _client() as client:
        found = client.pipeline(run_id).status()
    if json:
        render.print_json(_as_json(found))
    else:
        _tree(found)


@pipeline_app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    json: JsonOpt = False,
) -> None:
    """Pipeline runs, newest first."""
    with _client() as client:
        runs = [r.record for r in client.pipelines(limit)]
    if json:
        render.print_json(runs)
        return
    for r in runs:
        style = STATE_STYLE.get(r.state, "")
        render.out.print(f"{r.id}  [{style}]{r.state:<10}[/]  {r.name}  {render.ago(r.created_at)}")


@pipeline_app.command()
def cancel(run_id: RunId, json: JsonOpt = False) -> None:
    """Cancel every unfinished step of a run."""
    with _client() as client:
        record = client.pipeline(run_id).cancel().record
    if json:
        render.print_json(record)
    else:
        render.err.print(f"pipeline run {run_id}: cancel requested")


@pipeline_app.command()
def retry(run_id: RunId, wait: WaitOpt = False, json: JsonOpt = False) -> None:
    """Start a new run that reuses every step the old one completed with the same inputs."""
    with _client() as client:
        _started(client.pipeline(run_id).retry(), wait, json)


@pipeline_app.command()
def logs(
    run_id: RunId,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The step's name.")],
    item: Annotated[int | None, typer.Option(help="A fan-out's item (from 0).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", metavar="", help="Keep following.")
    ] = False,
) -> None:
    """Print a step's output (stdout to stdout, stderr to stderr)."""
    with _client() as client:
        job = client.pipeline(run_id).job(step, item)
        for chunk in job.chunks(follow=follow):
            stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
            stream.buffer.write(chunk.data)
            stream.flush()


def _params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from sandrun.errors import ValidationError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"--set {pair!r} must be KEY=VALUE", field="params")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def _started(run: Run, wait: bool, json: bool) -> None:
    """Print a run just started (its id); with `wait`, wait for it, show it, and exit 0
    only if it completed."""
    if not wait:
        if json:
            render.print_json(run.record)
        else:
            print(run.id)
        return
    render.err.print(f"[dim]pipeline run {run.id} started[/dim]")
    done = run.wait().status()
    if json:
        render.print_json(_as_json(done))
    else:
        _tree(done)
    raise typer.Exit(0 if done.state == "completed" else 1)


def _as_json(found: PipelineStatus) -> dict[str, Any]:
    return {
        "id": found.run.id,
        "name": found.run.name,
        "state": found.state,
        "retry_of": found.run.retry_of,
        "steps": {n: s.model_dump(mode="json") for n, s in found.steps.items()},
        "events": [e.model_dump(mode="json") for e in found.events],
    }


def _tree(found: PipelineStatus) -> None:
    from rich.tree import Tree

    style = STATE_STYLE.get(found.state, "")
    tree = Tree(f"[bold]{found.run.name}[/] {found.run.id} [{style}]{found.state}[/]")
    for name, step in found.steps.items():
        style = STATE_STYLE.get(step.state, "")
        line = f"{name} [{style}]{step.state}[/]"
        if step.items:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(step.items.items()))
            line += f" [dim]({len(step.jobs)} items: {counts})[/]"
        if step.needs:
            line += f" [dim]← {', '.join(step.needs)}[/]"
        if step.cached_from:
            line += f" [dim]cached from {step.cached_from}[/]"
        elif step.message and step.state not in ("completed", "waiting", step.message):
            line += f" [dim]{step.message}[/]"
        tree.add(line)
    render.out.print(tree)
