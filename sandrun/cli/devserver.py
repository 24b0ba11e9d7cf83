"""`sandrun server --dev`: everything to try a server at once — the server on loopback,
tokens for a user, an admin and an agent, and one agent on this machine — with the two
lines to paste printed once it listens. Not for production: tokens are printed, and the
agent runs as whoever started it."""

from __future__ import annotations

import os
import subprocess
import sys

from sandrun.errors import ValidationError
from sandrun.roles import Role
from sandrun.server import ServerSettings, is_loopback, open_server_service, run_server


def run_dev_server(settings: ServerSettings) -> None:
    if not is_loopback(settings.host):
        raise ValidationError(
            f"--dev serves loopback only, not {settings.host}: it prints its tokens",
            field="host",
            suggestions=["drop --host, or drop --dev and create tokens with `sandrun token`"],
        )
    service = open_server_service(settings.db)
    try:
        tokens = {role: service.create_token(f"dev-{role.value}", role) for role in Role}
    finally:
        service.close()
    url = f"http://{settings.host}:{settings.port}"
    agent: list[subprocess.Popen[bytes]] = []

    def start_agent() -> None:
        env = {**os.environ, "SANDRUN_TOKEN": tokens[Role.AGENT]}  # not on a command line
        argv = [sys.executable, "-c", "from sandrun.cli import main; main()", "agent"]
        agent.append(subprocess.Popen([*argv, "--server", url, "--name", "dev-agent"], env=env))
        print(
            f"\nsandrun dev server: {url}, one agent (dev-agent, pid {agent[0].pid})\n"
            f"  export SANDRUN_URL={url} SANDRUN_TOKEN={tokens[Role.USER]}\n"
            "  sandrun run -- echo hello\n"
            f"admin token: {tokens[Role.ADMIN]}\n",
            file=sys.stderr,
            flush=True,
        )

    try:
        run_server(settings, ready=start_agent)
    finally:
        for proc in agent:
            proc.terminate()  # it drains: running jobs get its --drain-grace
            proc.wait()
