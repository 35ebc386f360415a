"""The whole client stack (LLM: budget, concurrency, retries) over the real SDKs against faulty servers.

A clean server and a faulty one (429 with Retry-After, 500, timeouts, dropped
connections) must give the same answers in the same order; a budget must cap
the answers the server actually gives, even at concurrency 16 with retries.
"""

from __future__ import annotations

import asyncio

import pytest

from promptopt.errors import BudgetExceededError
from promptopt.llm.backends.anthropic import AnthropicBackend
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.budget import Budget
from promptopt.llm.client import LLM
from promptopt.llm.retry import RetryPolicy
from promptopt.llm.types import LLMRequest, LLMResponse, messages
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.faults import FaultPlan
from promptopt.testing.openai_server import OpenAITestServer

PROMPTS = [f"question number {i}" for i in range(120)]
# Only a 'timeout' fault may time out: an answered request that timed out on a loaded machine
# would count twice. Requests took up to 2 s here under load (the SDK's first call imports a lot).
CLIENT_TIMEOUT = 4.0
NO_HANGS_TIMEOUT = 60.0  # for servers that never hang
# Every kind of fault, at most two per request, so four attempts always get through. A hung
# request ends when the client gives up on it (the server cancels it on disconnect).
FAULTS = FaultPlan(
    {"429": 0.15, "500": 0.1, "timeout": 0.04, "drop": 0.08},
    seed=11,
    retry_after=0.05,
    hang_s=60.0,
    max_per_request=2,
)
RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.0)


def openai_llm(
    base_url: str,
    *,
    budget: Budget | None = None,
    concurrency: int = 16,
    timeout: float = CLIENT_TIMEOUT,
) -> LLM:
    backend = OpenAIBackend(model="loopback", base_url=base_url, timeout=timeout)
    return LLM(
        backend,
        provider="openai",
        model="loopback",
        budget=budget,
        max_concurrency=concurrency,
        retry=RETRY,
    )


async def ask_all(llm: LLM, prompts: list[str]) -> list[LLMResponse | BaseException]:
    requests = [LLMRequest(messages=messages(("user", prompt))) for prompt in prompts]
    return await asyncio.gather(*(llm.acomplete(r) for r in requests), return_exceptions=True)


async def test_faulty_server_gives_the_same_answers_as_a_clean_one() -> None:
    async with (
        OpenAITestServer(latency=0.01) as clean,
        OpenAITestServer(latency=0.01, faults=FAULTS) as faulty,
    ):
        clean_llm = openai_llm(clean.base_url, timeout=NO_HANGS_TIMEOUT)
        faulty_llm = openai_llm(faulty.base_url)
        expected = await ask_all(clean_llm, PROMPTS)
        got = await ask_all(faulty_llm, PROMPTS)
        await clean_llm.aclose()
        await faulty_llm.aclose()
    errors = [answer for answer in got if isinstance(answer, BaseException)]
    assert not errors, errors[:3]
    assert [r.text for r in got] == [r.text for r in expected] == PROMPTS  # type: ignore[union-attr]
    assert clean.stats.answered == faulty.stats.answered == 120
    assert set(faulty.stats.faulted) == {"429", "500", "timeout", "drop"}
    assert faulty.stats.received == 120 + faulty.stats.faulted_total
    assert faulty_llm.stats.calls == 120
    assert faulty_llm.stats.retries == faulty.stats.faulted_total
    # Concurrency is bounded by the client; hung 'timeout' handlers may linger a moment.
    assert clean.stats.max_in_flight <= 16
    assert faulty.stats.max_in_flight <= 16 + faulty.stats.faulted["timeout"]


async def test_budget_caps_what_the_server_answers() -> None:
    budget = Budget(max_calls=50)
    async with OpenAITestServer(latency=0.01, faults=FAULTS) as faulty:
        llm = openai_llm(faulty.base_url, budget=budget)
        got = await ask_all(llm, PROMPTS)
        more = await ask_all(llm, ["one more"])
        await llm.aclose()
    answered = [answer for answer in got if isinstance(answer, LLMResponse)]
    refused = [answer for answer in got if isinstance(answer, BudgetExceededError)]
    assert len(answered) == 50 and len(refused) == 70
    assert isinstance(more[0], BudgetExceededError)
    assert faulty.stats.answered == 50 == budget.calls
    assert budget.in_flight == 0
    assert all(answer.text in PROMPTS for answer in answered)


async def test_anthropic_stack_rides_out_overload_and_rate_limits() -> None:
    plan = FaultPlan(
        {"429": 0.2, "529": 0.2, "500": 0.1}, seed=3, retry_after=0.02, max_per_request=2
    )
    async with AnthropicTestServer(faults=plan) as server:
        backend = AnthropicBackend(
            model="claude-test", base_url=server.base_url, timeout=NO_HANGS_TIMEOUT
        )
        llm = LLM(
            backend, provider="anthropic", model="claude-test", max_concurrency=16, retry=RETRY
        )
        got = await ask_all(llm, PROMPTS[:40])
        await llm.aclose()
    assert [answer.text for answer in got] == PROMPTS[:40]  # type: ignore[union-attr]
    assert server.stats.answered == 40 and server.stats.faulted_total > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_sync_callers_use_the_threaded_server(seed: int) -> None:
    plan = FaultPlan({"429": 0.3}, seed=seed, retry_after=0.01, max_per_request=1)
    with OpenAITestServer(faults=plan) as server:
        llm = openai_llm(server.base_url, timeout=NO_HANGS_TIMEOUT)
        assert [llm.chat(prompt) for prompt in PROMPTS[:5]] == PROMPTS[:5]
    assert server.stats.answered == 5
