"""Retry policy: backoff, Retry-After, what is retried, and the client's retry loop.

The last tests send through the whole stack (LLM, the real SDK backends) to the loopback
fault servers and count what the server received: a request refused for what it is goes
out exactly once, a failure that may pass is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    ModelUnusableError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from promptopt.llm import LLM, LLMRequest, Message, RetryPolicy, scripted_llm
from promptopt.llm.backends.anthropic import AnthropicBackend
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.faults import FaultPlan
from promptopt.testing.openai_server import OpenAITestServer

REQUEST = LLMRequest(messages=(Message("user", "q"),))


def test_backoff_grows_exponentially_within_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0, jitter=0.1)
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)]:
        wait = policy.delay(attempt, ServerError(), rng)
        assert base * 0.9 <= wait <= base * 1.1


def test_backoff_is_capped_and_reproducible() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    assert policy.delay(30, LLMTimeoutError(), random.Random(1)) <= 5.0
    waits = [RetryPolicy().delay(3, ServerError(), random.Random(3)) for _ in range(2)]
    assert waits[0] == waits[1]


def test_retry_after_is_honoured_exactly_and_capped() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    rng = random.Random(0)
    assert policy.delay(1, RateLimitError(retry_after=3.5), rng) == 3.5
    assert policy.delay(4, ServerError(retry_after=2.0), rng) == 2.0
    assert policy.delay(1, RateLimitError(retry_after=600), rng) == 10.0


def test_only_retryable_errors_are_retried() -> None:
    policy = RetryPolicy(max_attempts=3)
    retryable = (RateLimitError(), ServerError(), LLMTimeoutError(), LLMConnectionError())
    for error in (*retryable, ConflictError("409")):
        assert policy.should_retry(error, attempt=1)
        assert not policy.should_retry(error, attempt=3)
    for error in (BadRequestError("x"), AuthenticationError("x"), ValueError("x")):
        assert not policy.should_retry(error, attempt=1)


def test_invalid_policy() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=2)


async def test_client_waits_retry_after_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    llm = scripted_llm(
        RateLimitError(retry_after=0.05),
        RateLimitError(retry_after=0.07),
        "ok",
        retry=RetryPolicy(base_delay=0.0),
    )
    response = await llm.acomplete(REQUEST)
    assert response.text == "ok"
    assert waits == [0.05, 0.07]  # each Retry-After, exactly, before the next attempt
    assert len(llm.backend.requests) == 3
    assert (llm.stats.retries, llm.stats.calls, llm.stats.failures) == (2, 1, 0)


async def test_non_retryable_error_is_raised_at_once() -> None:
    llm = scripted_llm(BadRequestError("bad"), "never used", retry=RetryPolicy(base_delay=0.0))
    with pytest.raises(BadRequestError, match="bad"):
        await llm.acomplete(REQUEST)
    assert len(llm.backend.requests) == 1
    assert (llm.stats.retries, llm.stats.failures) == (0, 1)


async def test_gives_up_after_max_attempts() -> None:
    llm = scripted_llm(
        *[ServerError("502", status=502)] * 3,
        "late",
        retry=RetryPolicy(max_attempts=3, base_delay=0.0),
    )
    with pytest.raises(ServerError, match="502"):
        await llm.acomplete(REQUEST)
    assert len(llm.backend.requests) == 3
    assert llm.backend.pending == 1
    assert (llm.stats.retries, llm.stats.failures, llm.stats.calls) == (2, 1, 0)


# -- the whole stack against the loopback fault servers -----------------------------------------

STACKS = {
    "openai": (OpenAITestServer, OpenAIBackend),
    "anthropic": (AnthropicTestServer, AnthropicBackend),
}


@pytest.fixture(params=sorted(STACKS))
def stack(request: pytest.FixtureRequest) -> Any:
    """Makes ``(server, llm)`` for a fault plan, over one provider's loopback server and backend."""
    server_class, backend_class = STACKS[request.param]

    @contextlib.asynccontextmanager
    async def make(plan: FaultPlan) -> AsyncIterator[tuple[Any, LLM]]:
        async with server_class(faults=plan) as server:
            backend = backend_class(model="m", base_url=server.base_url, timeout=30.0)
            llm = LLM(
                backend,
                provider=request.param,
                model="m",
                retry=RetryPolicy(max_attempts=5, base_delay=0.0, jitter=0.0),
            )
            try:
                yield server, llm
            finally:
                await llm.aclose()

    return make


@pytest.mark.parametrize(
    ("fault", "error", "unusable"),
    [
        ("400", BadRequestError, False),
        ("404", NotFoundError, True),  # a BadRequestError
        ("413", BadRequestError, False),
        ("422", BadRequestError, False),
        ("401", AuthenticationError, True),
        ("403", AuthenticationError, True),
        ("validation", BadRequestError, False),  # HTTP 500 naming a validation failure
    ],
)
async def test_a_refused_request_is_sent_once(
    stack: Any, fault: str, error: type[LLMError], unusable: bool
) -> None:
    """Sent once, never retried. A refused key or an unknown model before the model ever
    answered also marks it unusable (the run ends there): the cause is the refusal."""
    async with stack(FaultPlan({fault: 1.0})) as (server, llm):
        with pytest.raises((error, ModelUnusableError)) as caught:
            await llm.acomplete(REQUEST)
    raised = caught.value
    assert isinstance(raised, ModelUnusableError) == unusable
    refusal = raised.__cause__ if unusable else raised
    assert type(refusal) is error
    assert server.stats.received == 1 and server.stats.faulted == {fault: 1}
    assert (llm.stats.retries, llm.stats.failures, llm.stats.calls) == (0, 1, 0)


@pytest.mark.parametrize("fault", ["408", "409", "429", "500", "502", "503", "529"])
async def test_a_failure_that_may_pass_is_tried_again(stack: Any, fault: str) -> None:
    plan = FaultPlan({fault: 1.0}, retry_after=0.0, max_per_request=2)
    async with stack(plan) as (server, llm):
        response = await llm.acomplete(REQUEST)
    assert response.text == "q"
    assert server.stats.received == 3 and server.stats.faulted == {fault: 2}
    assert server.stats.answered == 1
    assert (llm.stats.retries, llm.stats.failures, llm.stats.calls) == (2, 0, 1)
