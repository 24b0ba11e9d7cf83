"""How the CLI shows things: tables, status panels, JSON, error lines."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from sandrun.errors import SandrunError
from sandrun.states import FailureReason, JobState

if TYPE_CHECKING:  # the models are only named here: `sandrun --help` need not load them
    from pydantic import BaseModel

    from sandrun.models import Attempt, Capacity, JobRecord, NodeInfo, TokenInfo
    from sandrun.pool.models import Reputation

# Piped output is never cut to a guessed terminal width: scripts read it whole.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLE = {
    JobState.WAITING: "dim yellow",
    JobState.PENDING: "yellow",
    JobState.SCHEDULED: "cyan",
    JobState.RUNNING: "blue",
    JobState.PAUSED: "dim blue",
    JobState.COMPLETED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
    JobState.SKIPPED: "dim",
}


def format_duration(seconds: float) -> str:
    from sandrun.spec.units import format_duration as formatted  # the spec loads pydantic

    return formatted(seconds)


def print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    from pydantic import BaseModel

    def plain(v: Any) -> Any:
        return v.model_dump(mode="json") if isinstance(v, BaseModel) else v

    data = [plain(v) for v in value] if isinstance(value, list) else plain(value)
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def error(exc: SandrunError) -> None:
    err.print(f"[red]error:[/red] {exc.message}", markup=True)
    for hint in exc.suggestions:
        err.print(f"  hint: {hint}", markup=False)


def ago(at: float) -> str:
    return format_duration(max(time.time() - at, 0)) + " ago"


def state_text(state: JobState) -> str:
    return f"[{STATE_STYLE[state]}]{state}[/]"


def ran_for(job: JobRecord) -> str:
    end = job.finished_at or time.time()
    return format_duration(end - job.created_at)


def jobs_table(jobs: list[JobRecord]) -> None:
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)  # never cut: users copy it
    for column in ("NAME", "STATE", "EXIT", "ATTEMPTS", "SUBMITTED", "ELAPSED"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job.id,
            job.name,
            state_text(job.state),
            "" if job.exit_code is None else str(job.exit_code),
            str(job.attempts),
            ago(job.created_at),
            ran_for(job),
        )
    out.print(table)


def _pool_rows(job: JobRecord) -> list[tuple[str, str]]:
    """What the pool says of a job: its replica's place, the agreement, what it paid."""
    rows = []
    if job.replica_of is not None:
        rows.append(("replica", f"{job.replica} of job {job.replica_of}"))
    outcome = job.consensus
    if isinstance(outcome, dict):
        dissenting = outcome.get("dissenting")
        dissent = len(dissenting) if isinstance(dissenting, list) else 0
        agreed = f"{outcome.get('k')} of {outcome.get('n')} replicas agreed"
        said = agreed if outcome.get("agreed") else f"none of {outcome.get('n')} agreed"
        rows.append(("consensus", said + (f", {dissent} dissented" if dissent else "")))
    if job.cost is not None:
        rows.append(("cost", f"${job.cost:,.6f}".rstrip("0").rstrip(".")))
    elif job.held:
        rows.append(("held", f"${job.held:,.6f}".rstrip("0").rstrip(".")))
    return rows


def status_panel(job: JobRecord, attempts: list[Attempt], waiting: str | None = None) -> None:
    rows = [
        ("id", job.id),
        ("name", job.name),
        ("state", state_text(job.state)),
    ]
    if job.spec.repository is not None:
        rows.append(("repository", f"{job.spec.repository.url} @ {job.spec.repository.ref}"))
    if job.exit_code is not None:
        rows.append(("exit code", str(job.exit_code)))
    if job.failure_reason is not None:
        rows.append(("reason", str(job.failure_reason)))
    if job.message and job.state is not JobState.COMPLETED:
        rows.append(("message", job.message))
    if waiting is not None:
        rows.append(("waiting", waiting))
    rows += _pool_rows(job)
    if job.cancel_requested and not job.is_terminal:
        rows.append(("cancel", "requested"))
    if job.preemptions:
        rows.append(("preempted", f"{job.preemptions} time(s), for jobs of higher priority"))
    if job.checkpoint is not None:
        rows.append(("checkpoint", f"{job.checkpoint[:12]} (`sandrun checkpoints {job.id}`)"))
    rows.append(("submitted", ago(job.created_at)))
    if job.state is JobState.PENDING and job.not_before > time.time():
        rows.append(("next try", f"in {format_duration(job.not_before - time.time())}"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    out.print(grid)
    if attempts:
        table = Table(box=None, header_style="bold", title_justify="left")
        for column in ("ATTEMPT", "STATE", "EXIT", "REASON", "NODE", "WALL", "CPU", "MAX RSS"):
            table.add_column(column)
        for a in attempts:
            u = a.usage
            table.add_row(
                str(a.number),
                str(a.state),
                "" if a.exit_code is None else str(a.exit_code),
                str(a.failure_reason or ""),
                a.node,
                format_duration(u.wall_seconds) if u.wall_seconds is not None else "",
                format_duration(u.cpu_seconds) if u.cpu_seconds is not None else "",
                f"{u.max_rss_mb:.1f} MiB" if u.max_rss_mb is not None else "",
            )
        out.print()
        out.print(table)
        for a in attempts:
            if a.git_commit:
                out.print(f"attempt {a.number} ran commit {a.git_commit}")


def exit_code_for(job: JobRecord) -> int:
    """The CLI's exit status for a finished job: the job's own, 124 timeout, 130 cancel."""
    if job.state is JobState.COMPLETED:
        return 0
    if job.state is JobState.CANCELLED:
        return 130
    if job.failure_reason is FailureReason.TIMEOUT:
        return 124
    if job.exit_code:
        return job.exit_code
    return 1


def summary(job: JobRecord) -> str:
    if job.state is JobState.COMPLETED:
        return f"job {job.id} completed in {ran_for(job)}"
    detail = f": {job.message}" if job.message and job.message != job.state else ""
    tries = f" after {job.attempts} attempts" if job.attempts > 1 else ""
    return f"job {job.id} {job.state}{tries}{detail}"


def _shape(c: Capacity) -> str:
    return f"{c.gpus}x{c.gpu_type} {c.gpu_memory_gb:g}GB"


def _gpus(node: NodeInfo) -> str:
    return f"{node.used_gpus}/{_shape(node.capacity)}" if node.capacity.gpus else "-"


def _free(node: NodeInfo) -> str:
    c = node.capacity
    parts = [
        f"{c.cpus - node.used_cpus:g} CPU",
        f"{(c.memory_mb - node.used_memory_mb) / 1024:.1f}G",
    ]
    if c.gpus:
        parts.append(f"{c.gpus - node.used_gpus} GPU")
    return " ".join(parts)


def _key(node: NodeInfo) -> str:
    """The worker key, shortened, and when it was first seen (a new key is worth a look)."""
    if node.public_key is None:
        return "-"
    seen = f" (since {ago(node.key_first_seen)})" if node.key_first_seen else ""
    return f"{node.public_key[:10]}…{seen}"


def tokens_table(tokens: list[TokenInfo]) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "ROLE", "CREATED", "REVOKED"):
        table.add_column(column, no_wrap=column == "ID")
    for t in tokens:
        revoked = ago(t.revoked_at) if t.revoked_at else "-"
        table.add_row(t.id, t.name, t.role.value, ago(t.created_at), revoked)
    out.print(table)


# Used/capacity fits an 80-column terminal; the rest comes with --wide.
NODE_COLUMNS = ("NAME", "STATE", "CPUS", "MEMORY", "GPUS", "RUNNING", "HEARTBEAT", "TRUST")
WIDE_COLUMNS = ("FREE", "WARM", "SANDBOX", "LABELS", "OPERATOR", "KEY", "ID")


def nodes_table(
    nodes: list[NodeInfo], wide: bool = False, reputations: dict[str, str] | None = None
) -> None:
    """`reputations`: node id -> its reputation in a word (TRUST; docs/pool.md)."""
    table = Table(box=None, header_style="bold")
    columns = NODE_COLUMNS + (WIDE_COLUMNS if wide else ())
    for column in columns:
        table.add_column(column, no_wrap=column == "ID")
    weak = []
    for n in nodes:
        style = {"active": "green", "draining": "yellow", "lost": "red", "stopped": "dim"}.get(
            n.state, ""
        )
        row = [
            n.name,
            f"[{style}]{n.state}[/]" if style else n.state,
            f"{n.used_cpus:g}/{n.capacity.cpus:g}",
            f"{n.used_memory_mb / 1024:.1f}/{n.capacity.memory_mb / 1024:.0f}G",
            _gpus(n),
            str(n.running),
            ago(n.heartbeat_at),
            (reputations or {}).get(n.id, "-"),
        ]
        if wide:
            labels = ",".join(f"{k}={v}" for k, v in n.labels.items())
            row += [_free(n), _warm(n), _sandbox(n), labels, n.operator or "-", _key(n), n.id]
        table.add_row(*row)
        loose = [k for k, v in (n.sandbox.limits if n.sandbox else {}).items() if "not" in v]
        if loose and n.state != "stopped":
            weak.append(f"{n.name}: not enforced: {', '.join(loose)}")
    out.print(table)
    for line in weak:
        err.print(f"[yellow]{line}[/]")
    for n in nodes:
        if (declared := _declared(n)) is not None:
            out.print(f"{n.name}: declared {declared}")


def _warm(node: NodeInfo) -> str:
    """Its warm workers: how many, how many idle, and the functions of yours they serve."""
    if node.warm is None or not node.warm.workers:
        return "-"
    mine = ",".join(sorted({f for g in node.warm.groups for f in g.functions}))
    return f"{node.warm.workers} ({node.warm.idle} idle)" + (f" {mine}" if mine else "")


def _declared(node: NodeInfo) -> str | None:
    """What the operator declared (--cpus, --memory, --gpus) beside what was detected."""
    found = node.detected
    if found is None:
        return None
    c = node.capacity
    said = []
    if c.cpus != found.cpus:
        said.append(f"{c.cpus:g} CPUs (detected {found.cpus:g})")
    if c.memory_mb != found.memory_mb:
        said.append(f"{c.memory_mb / 1024:.1f} GiB (detected {found.memory_mb / 1024:.1f})")
    if (c.gpus, c.gpu_type, c.gpu_memory_gb) != (found.gpus, found.gpu_type, found.gpu_memory_gb):
        gpus = _shape(c) if c.gpus else "no GPUs"
        said.append(f"{gpus} (detected {_shape(found) if found.gpus else 'none'})")
    return "; ".join(said) or None


def _sandbox(node: NodeInfo) -> str:
    if node.sandbox is None:
        return "?"
    text = node.sandbox.backend
    if node.sandbox.backend == "none":
        return "[red]none[/]"
    memory = node.sandbox.limits.get("memory", "")
    return f"{text}, {memory.split(' memory')[0]}" if memory.startswith("cgroup") else text


def trust(r: Reputation) -> str:
    """A node's reputation in a word, for `sandrun nodes`: new, valid/checked, quarantined."""
    if r.quarantined:
        return "[red]quarantined[/]"
    checked = r.valid + r.invalid
    return f"{r.valid}/{checked}" if checked else "new"


def reputation(r: Reputation) -> str:
    """A node's (or operator's) reputation in a few words."""
    if r.quarantined:
        return "[red]quarantined[/]"
    checked = r.valid + r.invalid
    return f"{r.valid}/{checked} valid, streak {r.streak}" if checked else "new"
