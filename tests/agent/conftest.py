"""Fixtures of the agent tests: a real local server speaking the agent protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.agent.peer import AgentPeer


@pytest.fixture
async def peer() -> AsyncIterator[AgentPeer]:
    server = AgentPeer()
    await server.start()
    yield server
    await server.stop()
