"""Fixtures for the backend tests: loopback OpenAI/Anthropic servers and the real llama.cpp server.

``llamacpp_server`` is session-scoped: the real SmolLM2 server starts once, on
first use, and is terminated at the end of the session. Tests that use it are
marked ``@pytest.mark.real``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.llamacpp import LlamaCppServer
from promptopt.testing.openai_server import OpenAITestServer


@pytest.fixture(scope="session")
def llamacpp_server() -> Iterator[LlamaCppServer]:
    """The real llama.cpp server running SmolLM2-135M-Instruct, started once per session."""
    with LlamaCppServer(n_ctx=2048) as server:
        yield server


@pytest.fixture
async def openai_server() -> AsyncIterator[OpenAITestServer]:
    """A clean loopback OpenAI-compatible server (echo answers, no faults)."""
    async with OpenAITestServer() as server:
        yield server


@pytest.fixture
async def anthropic_server() -> AsyncIterator[AnthropicTestServer]:
    """A clean loopback Messages API server (echo answers, no faults)."""
    async with AnthropicTestServer() as server:
        yield server
