"""A real sandrun server and agents as subprocesses on loopback, for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandrun.client import Client, connect
from sandrun.roles import Role
from sandrun.server import open_server_service
from tests.helpers import wait_for

SANDRUN = str(Path(sys.executable).parent / "sandrun")
LEASE = 2.0  # short, so lost agents are noticed within seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Cluster:
    root: Path
    db: str  # a SQLite path or a PostgreSQL URL
    lease: float = LEASE
    port: int = field(default_factory=free_port)
    tokens: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    others: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # port: server
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server_args: tuple[str, ...] = ()  # more `sandrun server` options
    # Jobs may name a directory the test shares with them (working_dir): trusted mode.
    host_paths: bool = False
    artifacts: str | None = None  # the servers' blob store (default: a directory in root)
    server_env: dict[str, str] = field(default_factory=dict)  # servers' only, not agents'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_tokens(self) -> None:
        service = open_server_service(self.db)
        for name, role in [
            ("admin", Role.ADMIN),
            ("agents", Role.AGENT),
            ("alice", Role.USER),
            ("bob", Role.USER),
        ]:
            self.tokens[name] = service.create_token(name, role)
        service.close()

    def add_tokens(self, role: Role, *names: str) -> None:
        """More tokens, each its own name's (an agent token is an operator)."""
        service = open_server_service(self.db)
        for name in names:
            self.tokens[name] = service.create_token(name, role)
        service.close()

    def start_server(self) -> subprocess.Popen[bytes]:
        self.server = self._server(self.port, "server")
        return self.server

    def start_other_server(self, args: tuple[str, ...] | None = None) -> str:
        """Another server process on the same database and blobs (with `args` in place of
        `server_args`); returns its URL."""
        port = free_port()
        self.others[port] = self._server(port, f"server-{port}", args)
        return f"http://127.0.0.1:{port}"

    def _server(
        self, port: int, name: str, args: tuple[str, ...] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [
                SANDRUN,
                "server",
                "--db",
                self.db,
                "--artifacts",
                self.artifacts or str(self.root / "artifacts"),
                "--port",
                str(port),
                "--lease",
                str(self.lease),
                *(["--allow-host-paths"] if self.host_paths else []),
                *(self.server_args if args is None else args),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, **self.server_env},
        )
        log.close()
        wait_for(lambda: _healthy(port), timeout=30, what=f"the server on port {port} to answer")
        return proc

    def start_agent(
        self,
        name: str,
        cpus: float = 2,
        drain_grace: float = 30,
        url: str | None = None,
        extra: tuple[str, ...] = (),
        token: str = "agents",
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / f"agent-{name}.log", "ab")
        proc = subprocess.Popen(
            [
                SANDRUN,
                "agent",
                "--server",
                url or self.url,
                "--name",
                name,
                "--cpus",
                str(cpus),
                "--work-dir",
                str(self.root / f"agent-{name}"),
                "--kill-grace",
                "0.5",
                "--drain-grace",
                str(drain_grace),
                *(["--allow-host-paths"] if self.host_paths else []),
                *extra,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**_without_cloud_keys(), "SANDRUN_TOKEN": self.tokens[token]},
        )
        log.close()
        self.agents[name] = proc
        wait_for(
            lambda: any(n.name == name and n.state == "active" for n in self.nodes()),
            timeout=30,
            what=f"agent {name} to register",
        )
        return proc

    def server_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.root.glob("server*.log"))

    def nodes(self) -> list:  # type: ignore[type-arg]
        with self.client("admin") as admin:
            return admin.nodes()

    def client(self, who: str = "alice") -> Client:
        return connect(self.url, token=self.tokens[who])

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        servers = [*([self.server] if self.server else []), *self.others.values()]
        procs = [*self.agents.values(), *servers]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _without_cloud_keys() -> dict[str, str]:
    """This environment less AWS_* (moto sets some): an agent holds no store credentials,
    so a test proves it moves blobs by presigned URLs alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
