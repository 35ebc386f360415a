"""The client's breaker: a model that fails before it ever answered ends the run in one clear error."""

from __future__ import annotations

import asyncio

import pytest

from promptopt.errors import (
    AuthenticationError,
    LLMConnectionError,
    LLMTimeoutError,
    ModelUnusableError,
    NotFoundError,
)
from promptopt.llm.client import LLM
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.llm.health import unusable
from promptopt.llm.retry import RetryPolicy
from promptopt.llm.types import LLMRequest, messages
from promptopt.testing.faults import FaultPlan
from promptopt.testing.openai_server import OpenAITestServer

NO_WAIT = RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0)
NO_RETRY = RetryPolicy(max_attempts=1)


def ask(text: str) -> LLMRequest:
    return LLMRequest(messages=messages(("user", text)))


def _endpoint_error(cls: type, message: str, endpoint: str = "http://h:1/v1"):
    error = cls(message)
    error.endpoint = endpoint
    return error


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (AuthenticationError, "the API key was refused"),
        (NotFoundError, "no such model"),
        (LLMConnectionError, "cannot connect"),
    ],
)
async def test_a_failure_before_any_answer_makes_the_model_unusable(error, cause):
    backend = ScriptedBackend([_endpoint_error(error, "boom")] * 3)
    llm = LLM(backend, provider="openai", model="m", retry=NO_WAIT)
    with pytest.raises(ModelUnusableError) as caught:
        await llm.acomplete(ask("a"))
    text = str(caught.value)
    assert text.startswith("model 'openai:m' at 'http://h:1/v1' cannot be used: ")
    assert cause in text and "boom" in text
    assert caught.value.endpoint == "http://h:1/v1" and caught.value.model == "openai:m"
    # the next request is refused without reaching the backend (nothing is planned for it)
    with pytest.raises(ModelUnusableError):
        await llm.acomplete(ask("b"))
    # a refused connection was retried first; a refused key or an unknown model were not
    assert len(backend.requests) == (3 if error is LLMConnectionError else 1)


async def test_refused_requests_are_not_sent_reserved_or_recorded():
    events = []
    backend = ScriptedBackend([AuthenticationError("bad key")])
    llm = LLM(backend, provider="fake", model="m", listeners=[events.append])
    with pytest.raises(ModelUnusableError):
        await llm.acomplete(ask("a"))
    with pytest.raises(ModelUnusableError):
        await llm.acomplete(ask("b"))
    assert [e.error for e in events] == ["AuthenticationError: bad key"]
    assert llm.stats.failures == 1 and llm.stats.calls == 0


async def test_once_the_model_answered_failures_stay_ordinary():
    backend = ScriptedBackend(["fine", AuthenticationError("expired"), "fine again"])
    llm = LLM(backend, provider="fake", model="m", retry=NO_WAIT)
    assert (await llm.acomplete(ask("a"))).text == "fine"
    with pytest.raises(AuthenticationError):
        await llm.acomplete(ask("b"))
    assert (await llm.acomplete(ask("c"))).text == "fine again"
    assert llm.health.failed is None


@pytest.mark.parametrize("error", [LLMTimeoutError("slow"), ValueError("not an LLM error")])
async def test_timeouts_and_other_errors_do_not_trip_it(error):
    llm = LLM(ScriptedBackend([error, "ok"]), provider="fake", model="m", retry=NO_RETRY)
    with pytest.raises(Exception) as caught:
        await llm.acomplete(ask("a"))
    assert not isinstance(caught.value, ModelUnusableError)
    assert (await llm.acomplete(ask("b"))).text == "ok"
    assert unusable(error, model="m") is None


async def test_a_request_waiting_to_retry_stops_when_another_finds_the_model_unusable():
    first_failure = asyncio.Event()
    sent: list[str] = []

    async def handler(request: LLMRequest) -> str:
        text = request.messages[-1].content
        sent.append(text)
        if text == "waits":
            first_failure.set()
            raise LLMConnectionError("refused")  # retried after a 1 s pause
        await first_failure.wait()
        raise AuthenticationError("bad key")  # not retried: the model is found unusable

    policy = RetryPolicy(max_attempts=6, base_delay=1.0, jitter=0.0)
    llm = LLM(FakeBackend(handler), provider="fake", model="m", retry=policy)
    results = await asyncio.gather(
        llm.acomplete(ask("waits")), llm.acomplete(ask("trips")), return_exceptions=True
    )
    assert all(isinstance(r, ModelUnusableError) for r in results)
    assert "the API key was refused" in str(results[0])
    assert sent.count("waits") == 1 and sent.count("trips") == 1


async def test_an_unknown_model_on_a_real_sdk_is_unusable():
    from promptopt.llm.backends.openai import OpenAIBackend

    async with OpenAITestServer(faults=FaultPlan({"404": 1.0})) as server:
        backend = OpenAIBackend(model="no-such-model", base_url=server.base_url)
        llm = LLM(backend, provider="openai", model="no-such-model")
        with pytest.raises(ModelUnusableError) as caught:
            await llm.acomplete(ask("hi"))
        await llm.aclose()
    assert caught.value.endpoint == server.base_url
    assert "no such model" in str(caught.value) and "HTTP 404" in str(caught.value)
    assert server.stats.received == 1  # a 404 is not retried
