"""Fixtures for the backend tests: loopback OpenAI/Anthropic servers and the real llama.cpp server.

``chat_endpoint`` serves one hand-written handler as ``POST /v1/chat/completions``.
``llamacpp_server`` is session-scoped: the real SmolLM2 server starts once, on
first use, and is terminated at the end of the session. Tests that use it are
marked ``@pytest.mark.real``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.llamacpp import LlamaCppServer, free_port
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


ChatHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def chat_endpoint() -> AsyncIterator[Callable[[ChatHandler], Awaitable[str]]]:
    """``await chat_endpoint(handler)`` serves ``handler`` as ``POST /v1/chat/completions`` on
    loopback and returns the base URL; the servers stop when the test ends."""
    runners: list[web.AppRunner] = []

    async def serve(handler: ChatHandler) -> str:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", handler)])
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/v1"

    yield serve
    for runner in runners:
        await runner.cleanup()
