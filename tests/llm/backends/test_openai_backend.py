"""The openai backend through the real ``openai`` SDK: loopback servers, faults, routing, SmolLM2."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from promptopt.llm.backends._http import parse_retry_after, public_url, status_error
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.base import Backend
from promptopt.llm.client import LLM
from promptopt.llm.retry import RetryPolicy
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


async def test_server_ignoring_n_gets_follow_up_calls(chat_endpoint: Any) -> None:
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

    backend = OpenAIBackend(model="m", base_url=await chat_endpoint(one_choice))
    response = await backend.agenerate(ask("x", n=3))
    await backend.aclose()
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
        ("408", LLMTimeoutError, None),
        ("409", ConflictError, None),
        ("validation", BadRequestError, None),  # llama.cpp's 500 for a body it cannot validate
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


async def test_retry_after_ms_wins_over_retry_after(chat_endpoint: Any) -> None:
    async def limited(request: web.Request) -> web.Response:
        headers = {"retry-after-ms": "1500", "Retry-After": "9"}
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)

    backend = OpenAIBackend(model="m", base_url=await chat_endpoint(limited))
    with pytest.raises(RateLimitError) as caught:
        await backend.agenerate(ask("x"))
    await backend.aclose()
    assert caught.value.retry_after == 1.5


async def test_refused_connection_is_a_connection_error() -> None:
    backend = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(LLMConnectionError, match="127.0.0.1"):
        await backend.agenerate(ask("hi"))
    await backend.aclose()


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (500, "Error code: 500 - 2 validation errors:\n  {'type': 'missing', ...}", BadRequestError),
        (500, "1 validation error for CreateChatCompletionRequest", BadRequestError),
        # older FastAPI wrote the list of errors alone
        (500, "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]", BadRequestError),
        (500, "Error code: 500 - llama_decode returned -3", ServerError),
        (503, "validation of the cluster state is pending", ServerError),
        (409, "Error code: 409 - lock timeout", ConflictError),
        (418, "I'm a teapot", BadRequestError),
    ],
)  # fmt: skip
def test_status_error_tells_a_refused_request_from_a_passing_failure(
    status: int, message: str, error: type[LLMError]
) -> None:
    assert type(status_error(status, message)) is error


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
    """While one endpoint holds a request, every request sent meanwhile goes to the other.

    Round robin alone would send every second one to the busy endpoint. Once it is free
    again, the two take turns.
    """
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_the_first(body: dict[str, Any]) -> str:
        if not held.is_set():
            held.set()
            await release.wait()
        return body["messages"][-1]["content"]

    async with OpenAITestServer(handler=hold_the_first) as busy, OpenAITestServer() as idle:
        backend = OpenAIBackend(model="m", base_url=[busy.base_url, idle.base_url])
        first = asyncio.ensure_future(backend.agenerate(ask("held")))
        await held.wait()
        meanwhile = [(await backend.agenerate(ask(f"q{i}"))).text for i in range(5)]
        assert (busy.stats.received, idle.stats.answered) == (1, 5)
        release.set()
        assert (await first).text == "held"
        after = [(await backend.agenerate(ask(f"after{i}"))).text for i in range(4)]
        await backend.aclose()
    assert meanwhile == [f"q{i}" for i in range(5)]
    assert after == [f"after{i}" for i in range(4)]
    assert (busy.stats.answered, idle.stats.answered) == (1 + 2, 5 + 2)


# -- the real llama.cpp server with SmolLM2 ------------------------------------------------------


# Only guards a hang: at load 11 on two cores one reply took over a minute.
REAL_TIMEOUT = 240.0


def real_backend(server: LlamaCppServer, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(
        model=server.model, base_url=server.base_url, timeout=REAL_TIMEOUT, **options
    )


@pytest.mark.real
class TestRealLlamaCpp:
    async def test_completion(self, llamacpp_server: LlamaCppServer) -> None:
        backend = real_backend(llamacpp_server)
        response = await backend.agenerate(ask("What is the capital of France?", max_tokens=16))
        await backend.aclose()
        assert response.text.strip()
        assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
        assert response.raw_id

    async def test_temperature_zero_repeats_answer_alike(
        self, llamacpp_server: LlamaCppServer
    ) -> None:
        """At temperature 0 the backend asks for greedy decoding (``temperature: 0``, which
        llama.cpp's sampler turns into ``add_greedy``), so the same request meeting the same
        server state gets the same answer. That is all it can promise.

        The server keeps the last prompt in its KV cache and reuses every token the next
        prompt shares with it (``Llama.generate``). A repeated prompt is therefore not
        evaluated again as a whole: the server drops its last token and evaluates it alone,
        a 1-token batch whose logits differ in their last bits from those the first call's
        whole-prompt batch gave, and a near-tie between two tokens may flip. So the first
        answer may differ from the repeats. Every repeat after that meets the same state
        (the prompt's first tokens, as computed once, and the same 1-token batch on top) and
        must answer alike, word for word.
        """
        backend = real_backend(llamacpp_server)
        request = ask("Name a colour.", temperature=0.0, max_tokens=8)
        answers = [(await backend.agenerate(request)).text for _ in range(4)]
        await backend.aclose()
        assert all(answer.strip() for answer in answers)
        assert answers[1] == answers[2] == answers[3], answers

    async def test_a_body_it_cannot_validate_is_not_retried(
        self, llamacpp_server: LlamaCppServer
    ) -> None:
        """llama.cpp's server answers a body that fails validation with HTTP 500; the same
        body would fail again, so it is a BadRequestError and the client sends it once."""
        backend = real_backend(llamacpp_server, top_k="many")
        llm = LLM(backend, provider="openai", model=llamacpp_server.model, retry=RetryPolicy())
        with pytest.raises(BadRequestError, match="validation error") as caught:
            await llm.acomplete(ask("hi", max_tokens=2))
        await llm.aclose()
        assert "top_k" in str(caught.value)
        assert (llm.stats.retries, llm.stats.failures) == (0, 1)

    async def test_grammar_choices(self, llamacpp_server: LlamaCppServer) -> None:
        backend = real_backend(llamacpp_server, grammar_choices=True)
        choices = ("positive", "negative", "neutral")
        request = ask("Sentiment of 'I love it!'? Answer in one word.", choices=choices)
        response = await backend.agenerate(request)
        await backend.aclose()
        assert response.text in choices

    async def test_n_two(self, llamacpp_server: LlamaCppServer) -> None:
        backend = real_backend(llamacpp_server)
        response = await backend.agenerate(ask("Say hi.", n=2, max_tokens=8, temperature=0.0))
        await backend.aclose()
        assert len(response.texts) == 2 and all(text.strip() for text in response.texts)
