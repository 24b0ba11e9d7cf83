"""The `sandrun` command."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point. `sandrun agent` loads only the agent's code (see cli/agentcmd.py)."""
    if sys.argv[1:2] == ["agent"]:
        from sandrun.cli.agentcmd import run_alone

        run_alone()
        return
    from sandrun.cli.main import main as run

    run()
