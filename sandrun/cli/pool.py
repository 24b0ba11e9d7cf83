"""The pool's commands: `balance`, `credit`, `ledger [check]`, `cost`, `pool status|nodes|
jobs`, `node quarantine|release` and `key` (docs/pool.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sandrun.cli import render
from sandrun.cli.options import JsonOpt

if TYPE_CHECKING:
    from sandrun.pool.models import PoolNode

ledger_app = typer.Typer(
    help="The escrow ledger: transfers of your account or of one job; `check` its invariants.",
    invoke_without_command=True,
)
pool_app = typer.Typer(help="The pool: its state, its nodes' reputation, its jobs.")
node_app = typer.Typer(help="Admins: stop a cheating node from taking jobs, or let it again.")

NodeArg = Annotated[
    str, typer.Argument(metavar="NODE", help="A node's name or id, or operator:NAME.")
]


def _usd(amount: float) -> str:
    return f"${amount:,.6f}".rstrip("0").rstrip(".") if amount else "$0"


def balance(
    owner: Annotated[str | None, typer.Option(help="Another owner's (admins).")] = None,
    json: JsonOpt = False,
) -> None:
    """What you have available for new jobs, and hold in escrow for unfinished ones."""
    from sandrun.client import connect

    with connect() as client:
        found = client.balance(owner)
    if json:
        render.print_json({"available": found.available, "held": found.held})
    else:
        render.out.print(
            f"{found.owner}: {_usd(found.available)} available, {_usd(found.held)} held"
        )


def credit(
    owner: Annotated[str, typer.Argument(help="Whose balance.")],
    amount: Annotated[float, typer.Argument(help="USD to add (negative: take back).")],
    memo: Annotated[str | None, typer.Option(help="Why, kept with the transfer.")] = None,
) -> None:
    """Add USD to an owner's balance (admins)."""
    from sandrun.client import connect

    with connect() as client:
        found = client.credit(owner, amount, memo)
    render.out.print(f"{found.owner}: {_usd(found.available)} available")


@ledger_app.callback()
def ledger(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option(metavar="ID", help="One job's transfers.")] = None,
    account: Annotated[
        str | None, typer.Option(help="An account (yours unless you are an admin).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Transfers: holds, payments, fees, refunds and credits."""
    if ctx.invoked_subcommand is not None:
        return
    from sandrun.client import connect

    with connect() as client:
        found = client.ledger(job, account)
    if json:
        render.print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "WHEN", "KIND", "FROM", "TO", "AMOUNT", "JOB"):
        table.add_column(column)
    for t in found:
        when = render.ago(t.at)
        table.add_row(str(t.id), when, t.kind, t.debit, t.credit, _usd(t.amount), t.job_id or "")
    render.out.print(table)


@ledger_app.command("check")
def ledger_check(json: JsonOpt = False) -> None:
    """Prove the ledger whole: balances equal their transfers, nothing is overdrawn, and no
    ended job holds escrow (admins). Exits 1 if not."""
    from sandrun.client import connect

    with connect() as client:
        found = client.ledger_check()
    if json:
        render.print_json(found)
    elif found.ok:
        render.out.print(
            f"ledger ok: {found.accounts} accounts, {found.transfers} transfers, "
            f"{_usd(found.escrow)} in escrow"
        )
    else:
        for problem in found.problems:
            render.err.print(f"[red]{problem}[/]")
    if not found.ok:
        raise typer.Exit(1)


def cost(
    since: Annotated[str, typer.Option(help="How far back: 7d, 12h, 30m.")] = "7d",
    by: Annotated[str, typer.Option(help="Group by job, label or day.")] = "job",
    json: JsonOpt = False,
) -> None:
    """What your jobs that ended lately cost."""
    from sandrun.client import connect

    with connect() as client:
        report = client.cost(since, by)
    if json:
        render.print_json(report)
        return
    table = Table(box=None, header_style="bold")
    for column in (by.upper(), "JOBS", "COST"):
        table.add_column(column)
    for line in report.lines:
        table.add_row(line.key, str(line.jobs), _usd(line.cost))
    render.out.print(table)
    render.out.print(f"total since {since}: {_usd(report.total)}")


@pool_app.command("status")
def pool_status(json: JsonOpt = False) -> None:
    """Nodes, capacity, the queue, throughput and how often results agree."""
    from sandrun.client import connect

    with connect() as client:
        found = client.pool_status()
    if json:
        render.print_json(found)
        return
    rate = f"{found.agreement_rate:.1%}" if found.agreement_rate is not None else "-"
    lines = [
        f"nodes       {found.live_nodes} live of {found.nodes}, {found.operators} operators, "
        f"{found.quarantined} quarantined",
        f"capacity    {found.cpus:g} CPUs, {found.gpus} GPUs",
        f"queue       {found.pending} pending, {found.running} running",
        f"last hour   {found.ended_last_hour} ended, {found.agreed_last_hour} agreed, "
        f"{found.no_consensus_last_hour} without consensus",
        f"agreement   {rate} of checked results valid",
        f"ledger      {'on: jobs are priced' if found.ledger else 'off: jobs are free'}",
    ]
    render.out.print("\n".join(lines))


@pool_app.command("nodes")
def pool_nodes(json: JsonOpt = False) -> None:
    """Each node with its reputation, and its operator's."""
    from sandrun.client import connect

    with connect() as client:
        found = client.pool_nodes()
    if json:
        render.print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "OPERATOR", "STATE", "RUNNING", "REPUTATION", "OPERATOR'S"):
        table.add_column(column)
    for n in found:
        table.add_row(
            n.name,
            n.operator,
            n.state,
            str(n.running),
            render.reputation(n.reputation),
            render.reputation(n.operator_reputation),
        )
    render.out.print(table)


@pool_app.command("jobs")
def pool_jobs(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    json: JsonOpt = False,
) -> None:
    """Your latest jobs with their agreement and cost."""
    from sandrun.client import connect

    with connect() as client:
        records = client.jobs(limit=limit).jobs
    if json:
        render.print_json(records)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATE", "CONSENSUS", "COST"):
        table.add_column(column, no_wrap=column == "ID")
    for r in records:
        agreed = _agreement(r.consensus, r.spec.consensus is not None)
        spent = _usd(r.cost) if r.cost is not None else "-"
        table.add_row(r.id, r.name, str(r.state), agreed, spent)
    render.out.print(table)


def _agreement(outcome: object, asked: bool) -> str:
    if not isinstance(outcome, dict):
        return "waiting" if asked else "-"
    if outcome.get("agreed") is None:
        return "none"
    dissent = len(outcome.get("dissenting") or [])
    return f"{outcome.get('k')} of {outcome.get('n')}" + (f", {dissent} dissent" if dissent else "")


@node_app.command("quarantine")
def quarantine(node: NodeArg) -> None:
    """Stop a node (or every node of operator:NAME) taking jobs (admins)."""
    _quarantine(node, True)


@node_app.command("release")
def release(node: NodeArg) -> None:
    """Let a quarantined node take jobs again (admins)."""
    _quarantine(node, False)


def _quarantine(node: str, quarantined: bool) -> None:
    from sandrun.client import connect

    with connect() as client:
        found: PoolNode = client.quarantine_node(node, quarantined)
    what = "quarantined" if quarantined else "released"
    subject = node if node.startswith("operator:") else found.name
    render.out.print(f"{subject} {what}")
    if not quarantined and found.operator_reputation.quarantined:
        render.err.print(
            f"[yellow]its operator is quarantined too: sandrun node release "
            f"operator:{found.operator}[/]"
        )


def key(
    path: Annotated[
        str | None,
        typer.Argument(help="The key file (default: $SANDRUN_KEY, else user.key in your home)."),
    ] = None,
) -> None:
    """Make (if absent) and show a key that signs your requests instead of a token, where
    the server takes them: its identity is your account, `key:<public key>`. Use it with
    SANDRUN_KEY=FILE; an admin tops it up with `sandrun credit key:... AMOUNT`."""
    from sandrun.home import Home
    from sandrun.signing import Identity

    chosen = path or os.environ.get("SANDRUN_KEY") or str(Home.resolve().root / "user.key")
    identity = Identity.load_or_create(Path(chosen).expanduser())
    render.out.print(f"key:{identity.worker_id}")
    render.err.print(f"[dim]{chosen} (keep it secret: whoever has it spends its balance)[/]")
