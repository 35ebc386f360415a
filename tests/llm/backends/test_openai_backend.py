"""The openai backend through the real ``openai`` SDK: loopback servers, faults, routing, SmolLM2."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from promptopt.llm.backends._http import parse_retry_after, public_url
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.base import Backend
from promptopt.llm.types import LLMRequest, messages
from promptopt.testing.faults import FaultPlan
from promptopt.testing.llamacpp import LlamaCppServer, free_port
from promptopt.testing.openai_server import OpenAITestServer

SECRET = "sk-test-very-secret-0123456789"


def ask(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(messages=messages(("user", text)), **fields)


# -- plain calls against the loopback server ----------------------------------------------------


async def test_completion_fills_the_response(openai_server: OpenAITestServer) -> None:
    backend = OpenAIBackend(model="echo-1", base_url=openai_server.base_url)
    assert isinstance(backend, Backend)
    request = LLMRequest(messages=messages(("system", "be brief"), ("user", "hello there world")))
    response = await backend.agenerate(request)
    await backend.aclose()
    assert response.text == "hello there world"
    assert response.texts == ("hello there world",)
    assert response.usage.prompt_tokens == 5 and response.usage.completion_tokens == 3
    assert response.raw_id and response.raw_id.startswith("chatcmpl-")
    assert response.model == "echo-1"
    assert response.latency_s > 0
    assert openai_server.stats.answered == 1


async def test_request_fields_reach_the_server() -> None:
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return "ok"

    async with OpenAITestServer(handler=handler) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, top_k=5)
        request = ask("hi", model="other", temperature=0.5, max_tokens=7, stop=("X",), seed=3)
        await backend.agenerate(request)
        await backend.agenerate(ask("hi", max_tokens=None))
        await backend.aclose()
    body = seen[0]
    assert body["model"] == "other"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == (
        0.5,
        7,
        ["X"],
        3,
    )
    assert body["top_k"] == 5
    assert "n" not in body and "grammar" not in body
    assert "max_tokens" not in seen[1] and "seed" not in seen[1]


async def test_n_completions_land_in_texts(openai_server: OpenAITestServer) -> None:
    backend = OpenAIBackend(model="m", base_url=openai_server.base_url)
    response = await backend.agenerate(ask("two please", n=3))
    await backend.aclose()
    assert response.texts == ("two please",) * 3
    assert response.usage.completion_tokens == 6
    assert openai_server.stats.received == 1


async def test_server_ignoring_n_gets_follow_up_calls() -> None:
    async def one_choice(request: web.Request) -> web.Response:
        body = await request.json()
        text = f"answer {body.get('n', 1)}"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{**choice, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
            }
        )

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", one_choice)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        backend = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1")
        response = await backend.agenerate(ask("x", n=3))
        await backend.aclose()
    finally:
        await runner.cleanup()
    assert response.texts == ("answer 3", "answer 1", "answer 1")
    assert response.usage.total_tokens == 12


@pytest.mark.parametrize("grammar_choices", [True, False])
async def test_choices_become_a_grammar_only_when_asked(grammar_choices: bool) -> None:
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return "yes"

    async with OpenAITestServer(handler=handler) as server:
        backend = OpenAIBackend(
            model="m", base_url=server.base_url, grammar_choices=grammar_choices
        )
        await backend.agenerate(ask("ok?", choices=("yes", 'no "way"')))
        await backend.agenerate(ask("ok?"))
        await backend.aclose()
    if grammar_choices:
        assert seen[0]["grammar"].strip() == 'root ::= "yes" | "no \\"way\\""'
    else:
        assert "grammar" not in seen[0]
    assert "grammar" not in seen[1]


# -- error translation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "retry_after"),
    [
        ("429", RateLimitError, 0.25),
        ("500", ServerError, None),
        ("503", ServerError, 0.25),
        ("drop", LLMConnectionError, None),
        ("timeout", LLMTimeoutError, None),
        ("404", NotFoundError, None),
        ("422", BadRequestError, None),
        ("403", AuthenticationError, None),
    ],
)
async def test_faults_map_to_promptopt_errors(
    fault: str, error: type[LLMError], retry_after: float | None
) -> None:
    timeout = 1.0 if fault == "timeout" else 10.0  # only the hang may time out, even under load
    plan = FaultPlan({fault: 1.0}, retry_after=0.25, hang_s=3.0)
    async with OpenAITestServer(faults=plan) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, timeout=timeout)
        with pytest.raises(error) as caught:
            await backend.agenerate(ask("hi"))
        await backend.aclose()
    assert type(caught.value) is error
    assert getattr(caught.value, "retry_after", None) == retry_after
    if error is ServerError:
        assert caught.value.status == int(fault)  # type: ignore[attr-defined]
    assert server.base_url in str(caught.value)
    assert caught.value.endpoint == server.base_url
    assert server.stats.faulted == {fault: 1} and server.stats.answered == 0


async def test_retry_after_ms_wins_over_retry_after() -> None:
    async def limited(request: web.Request) -> web.Response:
        headers = {"retry-after-ms": "1500", "Retry-After": "9"}
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", limited)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        backend = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1")
        with pytest.raises(RateLimitError) as caught:
            await backend.agenerate(ask("x"))
        await backend.aclose()
    finally:
        await runner.cleanup()
    assert caught.value.retry_after == 1.5


async def test_refused_connection_is_a_connection_error() -> None:
    backend = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(LLMConnectionError, match="127.0.0.1"):
        await backend.agenerate(ask("hi"))
    await backend.aclose()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"retry-after-ms": "bad", "retry-after": "3"}, 3.0),
        ({"Retry-After": "Fri, 27 Nov 2026 05:00:10 GMT"}, 10.0),
        ({"Retry-After": "Fri, 27 Nov 2026 04:00:00 GMT"}, 0.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    now = 1795755600.0  # Fri, 27 Nov 2026 05:00:00 GMT
    assert parse_retry_after(headers, now=now) == expected


# -- credentials --------------------------------------------------------------------------------


class LeakyServer(OpenAITestServer):
    """Echoes the Authorization header it got into its error message, like careless proxies do."""

    def authorized(self, request: web.Request) -> bool:
        self.last_auth = request.headers.get("Authorization", "")
        return False

    def error(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> Any:
        return super().error(status, f"{message}: got {self.last_auth!r}", headers=headers)


async def test_key_never_shows_in_repr_errors_or_namespace() -> None:
    async with LeakyServer(api_key="expected") as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key=SECRET)
        with pytest.raises(AuthenticationError) as caught:
            await backend.agenerate(ask("hi"))
        await backend.aclose()
    assert SECRET in server.last_auth  # the key was sent, and the server echoed it back
    for text in (repr(backend), str(backend.cache_namespace), str(caught.value)):
        assert SECRET not in text
    assert "***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuthenticationError, match="'MY_KEY'"):
        OpenAIBackend(model="m", api_key_env="MY_KEY")
    monkeypatch.setenv("MY_KEY", SECRET)
    async with OpenAITestServer(api_key=SECRET) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env="MY_KEY")
        assert (await backend.agenerate(ask("hi"))).text == "hi"
        await backend.aclose()
    assert SECRET not in repr(backend)


async def test_local_server_needs_no_key(openai_server: OpenAITestServer) -> None:
    backend = OpenAIBackend(model="m", base_url=openai_server.base_url)
    assert (await backend.agenerate(ask("hi"))).text == "hi"
    await backend.aclose()


async def test_credentials_in_the_url_stay_out_of_repr_and_errors() -> None:
    url = f"http://user:{SECRET}@127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(model="m", base_url=url, api_key="sk-other")
    with pytest.raises(LLMConnectionError) as caught:
        await backend.agenerate(ask("hi"))
    await backend.aclose()
    for text in (repr(backend), backend.cache_namespace, str(caught.value), *backend.endpoints):
        assert SECRET not in text


def test_cache_namespace_names_the_endpoints_without_credentials() -> None:
    one = OpenAIBackend(model="m", base_url="http://u:pw@10.0.0.1:8000/v1/?key=abc")
    two = OpenAIBackend(model="m", base_url="http://10.0.0.2:8000/v1")
    both = OpenAIBackend(model="m", base_url=["http://10.0.0.2:8000/v1", "http://10.0.0.1:8000/v1"])
    assert one.cache_namespace == "openai:http://10.0.0.1:8000/v1"
    assert one.cache_namespace != two.cache_namespace
    assert both.cache_namespace == "openai:http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1"
    assert public_url("https://[::1]:9/x/") == "https://[::1]:9/x"


# -- several endpoints --------------------------------------------------------------------------


async def test_idle_endpoints_take_turns() -> None:
    async with OpenAITestServer() as first, OpenAITestServer() as second:
        backend = OpenAIBackend(model="m", base_url=[first.base_url, second.base_url])
        for index in range(6):
            await backend.agenerate(ask(f"q{index}"))
        await backend.aclose()
    assert first.stats.answered == second.stats.answered == 3


async def test_requests_go_to_the_endpoint_with_fewest_in_flight() -> None:
    async with (
        OpenAITestServer(latency=0.3) as slow,
        OpenAITestServer(latency=0.01) as fast,
    ):
        backend = OpenAIBackend(model="m", base_url=[slow.base_url, fast.base_url])

        async def worker(name: int) -> list[str]:
            return [(await backend.agenerate(ask(f"{name}-{i}"))).text for i in range(6)]

        started = time.perf_counter()
        answers = await asyncio.gather(*(worker(name) for name in range(4)))
        elapsed = time.perf_counter() - started
        await backend.aclose()
    assert answers == [[f"{name}-{i}" for i in range(6)] for name in range(4)]
    assert slow.stats.answered + fast.stats.answered == 24
    assert slow.stats.answered >= 1
    assert fast.stats.answered >= 3 * slow.stats.answered
    assert elapsed < 2.0  # round robin alone would need 3 slow calls in a row per worker


# -- the real llama.cpp server with SmolLM2 ------------------------------------------------------


@pytest.mark.real
class TestRealLlamaCpp:
    async def test_completion(self, llamacpp_server: LlamaCppServer) -> None:
        backend = OpenAIBackend(model=llamacpp_server.model, base_url=llamacpp_server.base_url)
        response = await backend.agenerate(ask("What is the capital of France?", max_tokens=16))
        await backend.aclose()
        assert response.text.strip()
        assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
        assert response.raw_id

    async def test_temperature_zero_is_deterministic(self, llamacpp_server: LlamaCppServer) -> None:
        backend = OpenAIBackend(model=llamacpp_server.model, base_url=llamacpp_server.base_url)
        request = ask("Name a colour.", temperature=0.0, max_tokens=8)
        first = await backend.agenerate(request)
        second = await backend.agenerate(request)
        await backend.aclose()
        assert first.text == second.text

    async def test_grammar_choices(self, llamacpp_server: LlamaCppServer) -> None:
        backend = OpenAIBackend(
            model=llamacpp_server.model, base_url=llamacpp_server.base_url, grammar_choices=True
        )
        choices = ("positive", "negative", "neutral")
        request = ask("Sentiment of 'I love it!'? Answer in one word.", choices=choices)
        response = await backend.agenerate(request)
        await backend.aclose()
        assert response.text in choices

    async def test_n_two(self, llamacpp_server: LlamaCppServer) -> None:
        backend = OpenAIBackend(model=llamacpp_server.model, base_url=llamacpp_server.base_url)
        response = await backend.agenerate(ask("Say hi.", n=2, max_tokens=8, temperature=0.0))
        await backend.aclose()
        assert len(response.texts) == 2 and all(text.strip() for text in response.texts)
