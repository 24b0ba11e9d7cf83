"""How long the `sandrun` command takes to start, against a bare Python in the same run.

    python bench/cli_startup.py [--runs 20]

Each line is the median wall time of --runs runs: `python -c pass` (the floor every Python
command pays), `sandrun --version`, `sandrun --help`, and `sandrun status JOB` on an
embedded home (a job submitted first; no agent needed to read it). Target (issue 20):
`--help` and `status` under 0.15 s.

Two floors are measured in the same run: a two-command typer app (`--help`, and running a
command, which makes typer build its pydantic coercion) and the same app in plain click,
so the figures say how much is sandrun's own and how much the CLI framework's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SANDRUN = str(Path(sys.executable).parent / "sandrun")

TYPER_APP = """
import typer
app = typer.Typer()
@app.command()
def status(job_id: str) -> None:
    print(job_id)
@app.command()
def other() -> None:
    pass
app()
"""
CLICK_APP = """
import click
@click.group()
def cli() -> None:
    pass
@cli.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    print(job_id)
cli()
"""


def median_seconds(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "SANDRUN_HOME": home, "SANDRUN_IDLE_EXIT": "1"}
        env.pop("SANDRUN_URL", None)
        job = subprocess.run(
            [SANDRUN, "submit", "--", "true"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        typer_app, click_app = Path(home, "typer_app.py"), Path(home, "click_app.py")
        typer_app.write_text(TYPER_APP)
        click_app.write_text(CLICK_APP)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("click app --help", [sys.executable, str(click_app), "--help"]),
            ("click app status X", [sys.executable, str(click_app), "status", "x"]),
            ("typer app --help", [sys.executable, str(typer_app), "--help"]),
            ("typer app status X", [sys.executable, str(typer_app), "status", "x"]),
            ("sandrun --version", [SANDRUN, "--version"]),
            ("sandrun --help", [SANDRUN, "--help"]),
            ("sandrun status JOB", [SANDRUN, "status", job]),
        ]
        floor = None
        for name, argv in rows:
            seconds = median_seconds(argv, runs, env)
            floor = floor or seconds
            print(f"{name:<22} {seconds * 1000:7.1f} ms   {seconds / floor:5.1f}x bare python")


if __name__ == "__main__":
    main()
