"""The anthropic backend through the real ``anthropic`` SDK against the loopback Messages server."""

from __future__ import annotations

from typing import Any

import pytest

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from promptopt.llm.backends.anthropic import AnthropicBackend
from promptopt.llm.base import Backend
from promptopt.llm.types import LLMRequest, messages
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.faults import FaultPlan
from promptopt.testing.llamacpp import free_port

SECRET = "sk-ant-test-very-secret-0123456789"


def ask(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(messages=messages(("user", text)), **fields)


class Recorder:
    """A server handler that records request bodies and answers with a fixed text."""

    def __init__(self, text: str = "fine") -> None:
        self.text = text
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> str:
        self.bodies.append(body)
        return self.text


async def test_completion_fills_the_response(anthropic_server: AnthropicTestServer) -> None:
    backend = AnthropicBackend(model="claude-test", base_url=anthropic_server.base_url)
    assert isinstance(backend, Backend)
    response = await backend.agenerate(ask("hello there world"))
    await backend.aclose()
    assert response.text == "hello there world"
    assert response.usage.prompt_tokens == 3 and response.usage.completion_tokens == 3
    assert response.raw_id and response.raw_id.startswith("msg_")
    assert response.model == "claude-test"
    assert response.latency_s > 0


async def test_system_messages_go_into_the_system_field() -> None:
    recorder = Recorder()
    async with AnthropicTestServer(handler=recorder) as server:
        backend = AnthropicBackend(model="claude-test", base_url=server.base_url)
        request = LLMRequest(
            messages=messages(
                ("system", "You are terse."),
                ("user", "Hi"),
                ("assistant", "Hello"),
                ("system", "Answer in French."),
                ("user", "Bye"),
            )
        )
        await backend.agenerate(request)
        await backend.aclose()
    body = recorder.bodies[0]
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert body["model"] == "claude-test"


async def test_no_system_field_without_system_messages() -> None:
    recorder = Recorder()
    async with AnthropicTestServer(handler=recorder) as server:
        backend = AnthropicBackend(model="claude-test", base_url=server.base_url, metadata={})
        await backend.agenerate(ask("Hi", max_tokens=None))
        await backend.agenerate(ask("Hi", max_tokens=5, model="claude-other"))
        await backend.aclose()
    first, second = recorder.bodies
    assert "system" not in first and "stop_sequences" not in first
    assert first["max_tokens"] == 1024 and first["metadata"] == {}
    assert second["max_tokens"] == 5 and second["model"] == "claude-other"


async def test_stop_becomes_stop_sequences(anthropic_server: AnthropicTestServer) -> None:
    backend = AnthropicBackend(model="claude-test", base_url=anthropic_server.base_url)
    response = await backend.agenerate(ask("one two END three", stop=("END", "ZZZ")))
    await backend.aclose()
    assert response.text == "one two "
    assert response.usage.completion_tokens == 2


async def test_max_tokens_cuts_the_answer(anthropic_server: AnthropicTestServer) -> None:
    backend = AnthropicBackend(model="claude-test", base_url=anthropic_server.base_url)
    response = await backend.agenerate(ask("a b c d e f", max_tokens=3))
    await backend.aclose()
    assert response.text == "a b c"


async def test_n_makes_n_calls_and_sums_usage(anthropic_server: AnthropicTestServer) -> None:
    backend = AnthropicBackend(model="claude-test", base_url=anthropic_server.base_url)
    response = await backend.agenerate(ask("x y", n=3))
    await backend.aclose()
    assert response.texts == ("x y",) * 3
    assert response.usage.prompt_tokens == 6 and response.usage.completion_tokens == 6
    assert anthropic_server.stats.answered == 3


@pytest.mark.parametrize(
    ("fault", "error", "retry_after"),
    [
        ("429", RateLimitError, 0.5),
        ("529", ServerError, 0.5),
        ("500", ServerError, None),
        ("drop", LLMConnectionError, None),
        ("timeout", LLMTimeoutError, None),
        ("400", BadRequestError, None),
        ("401", AuthenticationError, None),
    ],
)
async def test_faults_map_to_promptopt_errors(
    fault: str, error: type[LLMError], retry_after: float | None
) -> None:
    timeout = 1.0 if fault == "timeout" else 10.0  # only the hang may time out, even under load
    plan = FaultPlan({fault: 1.0}, retry_after=0.5, hang_s=3.0)
    async with AnthropicTestServer(faults=plan) as server:
        backend = AnthropicBackend(model="c", base_url=server.base_url, timeout=timeout)
        with pytest.raises(error) as caught:
            await backend.agenerate(ask("hi"))
        await backend.aclose()
    assert type(caught.value) is error
    assert getattr(caught.value, "retry_after", None) == retry_after
    if error is ServerError:
        assert caught.value.status == int(fault)  # type: ignore[attr-defined]


async def test_wrong_key_is_an_authentication_error_without_the_key() -> None:
    async with AnthropicTestServer(api_key="the-right-one") as server:
        backend = AnthropicBackend(model="c", base_url=server.base_url, api_key=SECRET)
        with pytest.raises(AuthenticationError, match="authentication_error") as caught:
            await backend.agenerate(ask("hi"))
        await backend.aclose()
    assert SECRET not in str(caught.value) and SECRET not in repr(backend)


async def test_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuthenticationError, match="'ANTHROPIC_API_KEY'"):
        AnthropicBackend(model="c")
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    async with AnthropicTestServer(api_key=SECRET) as server:
        backend = AnthropicBackend(model="c", base_url=server.base_url)
        assert (await backend.agenerate(ask("hi"))).text == "hi"
        await backend.aclose()
    assert SECRET not in repr(backend) and SECRET not in backend.cache_namespace


async def test_refused_connection_is_a_connection_error() -> None:
    backend = AnthropicBackend(model="c", base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(LLMConnectionError):
        await backend.agenerate(ask("hi"))
    await backend.aclose()


def test_cache_namespace_names_the_endpoint() -> None:
    backend = AnthropicBackend(model="c", base_url="http://u:pw@127.0.0.1:9/", api_key="k")
    assert backend.cache_namespace == "anthropic:http://127.0.0.1:9"
    assert AnthropicBackend(model="c", api_key="k").cache_namespace == (
        "anthropic:https://api.anthropic.com"
    )
