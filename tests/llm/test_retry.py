"""Retry policy: backoff, Retry-After, what is retried, and the client's retry loop."""

from __future__ import annotations

import random
import time

import pytest

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    LLMConnectionError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from promptopt.llm import LLMRequest, Message, RetryPolicy, scripted_llm

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
    for error in (RateLimitError(), ServerError(), LLMTimeoutError(), LLMConnectionError()):
        assert policy.should_retry(error, attempt=1)
        assert not policy.should_retry(error, attempt=3)
    for error in (BadRequestError("x"), AuthenticationError("x"), ValueError("x")):
        assert not policy.should_retry(error, attempt=1)


def test_invalid_policy() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=2)


async def test_client_waits_retry_after_then_succeeds() -> None:
    llm = scripted_llm(
        RateLimitError(retry_after=0.05),
        RateLimitError(retry_after=0.05),
        "ok",
        retry=RetryPolicy(base_delay=0.0),
    )
    start = time.perf_counter()
    response = await llm.acomplete(REQUEST)
    elapsed = time.perf_counter() - start
    assert response.text == "ok"
    assert 0.1 <= elapsed < 1.0
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
