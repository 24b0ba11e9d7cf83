"""`sandrun doctor`: what this machine can enforce and reach, and how to fix what is missing.

It probes what an agent here would use — the sandbox backend (a real start, as the agent
makes one), cgroups, the seccomp filter, GPUs, free disk — and, where configured, the
PostgreSQL database and the server. Each check is one line: ok, or the problem and a fix.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from sandrun.cli import render

MIN_FREE_GB = 5  # below it, a job's outputs and a few scratch directories may not fit


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""


def doctor(
    db: Annotated[
        str | None,
        typer.Option(envvar="SANDRUN_DB", metavar="URL", help="Also check this database."),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print machine-readable JSON.")
    ] = False,
) -> None:
    """Check what this machine can enforce (sandbox, cgroups, seccomp, GPUs, disk) and
    reach (the database, $SANDRUN_URL's server); exit 1 if something needs fixing."""
    from sandrun.home import Home

    home = Home.resolve()
    checks = [*_sandbox(home.root), _gpus(), _disk(home.root)]
    if db and "://" in db:
        checks.append(_database(db))
    if url := os.environ.get("SANDRUN_URL"):
        checks.append(_server(url))
    if json:
        render.print_json([asdict(c) for c in checks])
    else:
        for c in checks:
            mark = "[green]ok[/]  " if c.ok else "[red]fix[/] "
            render.out.print(f"{mark} {c.name:<9} {c.found}")
            if c.fix:
                render.out.print(f"      {'':<9} [dim]→ {c.fix}[/]")
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


def _sandbox(root: Path) -> list[Check]:
    """The backend `auto` picks here, as a remote agent would open it, and what it enforces."""
    from sandrun.agent.sandbox import FsView, open_sandboxing
    from sandrun.errors import SandrunError

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix="doctor-") as scratch:
        try:
            sandboxing = open_sandboxing(
                "auto", FsView("system"), job_uids=True, scratch=Path(scratch)
            )
        except SandrunError as exc:
            return [
                Check("sandbox", False, str(exc), "install bubblewrap (apt install bubblewrap)")
            ]
        report = sandboxing.report()
    backend = report.backend
    checks = [
        Check(
            "sandbox",
            backend != "none",
            f"{backend} ({report.view} view; jobs run as {report.job_user})",
            "" if backend != "none" else "install bubblewrap (apt install bubblewrap)",
        )
    ]
    cgroups = "cgroup" in report.limits.get("memory", "")
    checks.append(
        Check(
            "cgroups",
            cgroups,
            f"memory: {report.limits.get('memory')}; processes: {report.limits.get('processes')}",
            ""
            if cgroups
            else "run the agent as root on a cgroup v2 host (or with a delegated "
            "cgroup subtree) so memory and process limits are enforced",
        )
    )
    filtered = not report.seccomp.startswith("none")
    checks.append(
        Check(
            "seccomp",
            filtered or backend == "unshare",
            report.seccomp,
            "" if filtered else "install libseccomp2 and bubblewrap",
        )
    )
    return checks


def _gpus() -> Check:
    from sandrun.agent.gpus import detect_gpus

    count, model, memory = detect_gpus()
    if not count:
        return Check("gpus", True, "none found (NVML, nvidia-smi); declare any with --gpus")
    return Check("gpus", True, f"{count} x {model} ({memory:g} GB each)")


def _disk(root: Path) -> Check:
    free = shutil.disk_usage(root).free / 2**30
    ok = free >= MIN_FREE_GB
    fix = "" if ok else f"free space under {root} (or set $SANDRUN_HOME elsewhere)"
    return Check("disk", ok, f"{free:.1f} GiB free under {root}", fix)


def _database(url: str) -> Check:
    from sandrun.server import describe_db

    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except Exception as exc:  # any failure to reach it is the answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("database", False, f"{describe_db(url)}: {first}", "check --db / $SANDRUN_DB")
    return Check(
        "database", True, f"{describe_db(url)}: PostgreSQL {version[0] if version else '?'}"
    )


def _server(url: str) -> Check:
    import httpx

    try:
        answer = httpx.get(f"{url.split(',')[0].rstrip('/')}/v1/health", timeout=5)
        answer.raise_for_status()
        version = answer.json().get("version", "?")
    except (httpx.HTTPError, ValueError) as exc:
        return Check(
            "server", False, f"{url}: {exc}", "check $SANDRUN_URL and that the server runs"
        )
    return Check("server", True, f"{url}: sandrun {version} (python {sys.version.split()[0]} here)")
