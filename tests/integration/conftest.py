from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sandrun.agent.local import LocalAgent
from sandrun.client import Client, connect
from sandrun.home import Home


@dataclass
class Local:
    client: Client
    agent: LocalAgent


@pytest.fixture
def local(home: Home) -> Iterator[Local]:
    """The real local agent, on a thread of this process, and a client of the same home."""
    agent = LocalAgent(home, idle_exit=None, kill_grace=0.5)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    client = connect(home=home.root)
    yield Local(client, agent)
    agent.stop()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the agent did not drain"
    client.close()
