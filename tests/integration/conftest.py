from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sandrun.agent.local import LocalAgent
from sandrun.client import Client, connect
from sandrun.home import Home
from tests.helpers import local_agent


@dataclass
class Local:
    client: Client
    agent: LocalAgent


@pytest.fixture
def local(home: Home) -> Iterator[Local]:
    """The real local agent, on a thread of this process, and a client of the same home."""
    with local_agent(home) as agent, connect(home=home.root) as client:
        yield Local(client, agent)
