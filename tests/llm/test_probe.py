"""The pre-flight probe: a free model-list GET against the loopback OpenAI and Anthropic servers."""

from __future__ import annotations

import pytest

from promptopt.errors import AuthenticationError, LLMConnectionError, LLMTimeoutError
from promptopt.llm.models import ModelConfig, http_of, providers
from promptopt.llm.probe import probe_model
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.llamacpp import free_port
from promptopt.testing.openai_server import OpenAITestServer

SECRET = "sk-probe-very-secret-0123456789"
SERVERS = {"openai": OpenAITestServer, "anthropic": AnthropicTestServer}


def test_every_http_provider_has_a_loopback_server_here():
    assert set(SERVERS) == {name for name in providers() if http_of(name) is not None}


@pytest.mark.parametrize("provider", SERVERS)
async def test_the_right_key_passes_and_no_completion_is_sent(provider, monkeypatch):
    monkeypatch.setenv("PO_KEY", SECRET)
    async with SERVERS[provider](api_key=SECRET) as server:
        config = ModelConfig(model=f"{provider}:m", base_url=server.base_url, api_key_env="PO_KEY")
        await probe_model(config, timeout=5.0)
    assert server.stats.received == 0  # the model list is not a completion


@pytest.mark.parametrize("provider", SERVERS)
async def test_a_wrong_key_is_an_authentication_error_without_the_key(provider, monkeypatch):
    monkeypatch.setenv("PO_KEY", SECRET)
    async with SERVERS[provider](api_key="the-right-one") as server:
        config = ModelConfig(model=f"{provider}:m", base_url=server.base_url, api_key_env="PO_KEY")
        with pytest.raises(AuthenticationError, match="HTTP 401") as caught:
            await probe_model(config, timeout=5.0)
    assert caught.value.endpoint == server.base_url
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("provider", SERVERS)
async def test_a_closed_port_is_a_connection_error_naming_the_endpoint(provider):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LLMConnectionError) as caught:
        await probe_model(ModelConfig(model=f"{provider}:m", base_url=url), timeout=5.0)
    assert caught.value.endpoint == url and url in str(caught.value)


async def test_every_replica_is_asked():
    closed = f"http://127.0.0.1:{free_port()}/v1"
    async with OpenAITestServer() as server:
        config = ModelConfig(model="openai:m", base_url=[server.base_url, closed])
        with pytest.raises(LLMConnectionError) as caught:
            await probe_model(config, timeout=5.0)
    assert caught.value.endpoint == closed


async def test_a_server_that_never_answers_times_out():
    import socket

    with socket.socket() as listener:  # accepts connections (the backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with pytest.raises(LLMTimeoutError, match="did not answer within 0.2 s"):
            await probe_model(ModelConfig(model="openai:m", base_url=url), timeout=0.2)
