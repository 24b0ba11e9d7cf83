"""Command-line options shared by several `sandrun` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print machine-readable JSON.")]
JobId = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.", show_default=False)]


# Options shared by `run` and `submit`.
CommandArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="COMMAND...", help="The command and its arguments, after --."),
]
FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", metavar="FILE", help="A YAML job spec.", dir_okay=False),
]
ShellOpt = Annotated[
    str | None, typer.Option(metavar="LINE", help="A shell command line, run by /bin/sh -c.")
]
NameOpt = Annotated[
    str | None, typer.Option(metavar="NAME", help="A name: letters, digits, - and _.")
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        metavar="KEY[=VALUE]",
        help="KEY=VALUE, or KEY to copy it from here. Repeatable.",
    ),
]
AfterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--after",
        metavar="ID[:ok|failed|any]",
        help="Wait for this job to end first (repeatable; default condition ok).",
    ),
]
ConsensusOpt = Annotated[
    str | None,
    typer.Option(
        metavar="K-of-N|low|medium|high",
        help="Run as replicas on distinct operators' nodes until K agree (docs/pool.md).",
    ),
]
VolumeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--volume",
        metavar="NAME[:PATH][:ro]",
        help="Mount a volume of yours (at /volumes/NAME unless PATH; ro: read-only).",
    ),
]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option("--secret", metavar="NAME", help="Give the job a secret of yours as $NAME."),
]
MaxPriceOpt = Annotated[
    float | None,
    typer.Option(metavar="USD", help="The most the job may cost, where jobs are priced."),
]
CpusOpt = Annotated[float | None, typer.Option(metavar="N", help="CPUs to reserve (default 1).")]
MemoryOpt = Annotated[
    str | None, typer.Option(metavar="SIZE", help="Memory to reserve, e.g. 512MB, 8GB.")
]
TimeoutOpt = Annotated[
    str | None, typer.Option(metavar="DURATION", help="Wall-clock limit, e.g. 90, 30m, 2h.")
]
RetriesOpt = Annotated[
    int | None, typer.Option(metavar="N", help="Retries after a failed attempt.")
]
OutputOpt = Annotated[
    list[str] | None,
    typer.Option("--output", "-o", metavar="GLOB", help="Glob of files to keep. Repeatable."),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", metavar="KEY=VALUE", help="A label. Repeatable."),
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        metavar="GPUS",
        help="GPUs: a count (2), a model (a100), both (4xa100), or models to choose from "
        "(2xa100,h100).",
    ),
]
MinGpuMemoryOpt = Annotated[
    float | None,
    typer.Option(metavar="GB", help="Each GPU with at least this many GB (any model by default)."),
]
RequireOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--require",
        metavar="KEY=VALUE",
        help="Run only on nodes with this label, KEY=VALUE. Repeatable.",
    ),
]
PriorityOpt = Annotated[
    str | None, typer.Option(metavar="PRIORITY", help="low, normal, high or an integer.")
]
PreemptibleOpt = Annotated[
    bool | None,
    typer.Option(
        "--preemptible",
        metavar="",
        help="Let a pending job of higher priority stop it (it is asked to checkpoint first, "
        "then resumed).",
    ),
]
RestoreFromOpt = Annotated[
    str | None,
    typer.Option(metavar="JOB_ID", help="Start from that job's newest checkpoint."),
]
NetworkOpt = Annotated[
    bool | None,
    typer.Option("--network", metavar="", help="Let the job reach the network (default: off)."),
]
RepoOpt = Annotated[
    str | None,
    typer.Option(
        "--repo", metavar="URL", help="A git repository to check out and run in (URL, or file://)."
    ),
]
RefOpt = Annotated[
    str | None,
    typer.Option(
        "--ref", metavar="REF", help="The branch, tag or commit of --repo (default main)."
    ),
]
UploadOpt = Annotated[
    bool | None,
    typer.Option(
        "--upload/--no-upload",
        metavar="",
        help="Send the current directory as the job's working directory "
        "(default: yes with a server; on this machine jobs run in place).",
    ),
]
WorkdirOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Directory to run in (default: the current one).")
]
