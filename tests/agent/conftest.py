"""Fixtures of the agent tests: a real local server speaking the agent protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from tests.agent.peer import AgentPeer, AgentProcess


@pytest.fixture
async def peer() -> AsyncIterator[AgentPeer]:
    server = AgentPeer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Agent processes a test starts (append them): each is stopped by its PID at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()
