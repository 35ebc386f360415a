"""The hard budget: reservations, limits, and no overshoot under concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from promptopt.errors import BudgetExceededError, ConfigError, PromptoptError, ServerError
from promptopt.llm import (
    Budget,
    LLMRequest,
    Message,
    Price,
    PriceTable,
    RetryPolicy,
    Usage,
    fake_llm,
    scripted_llm,
)
from promptopt.llm.client import estimate_tokens


def _request(text: str = "hi", **fields: object) -> LLMRequest:
    return LLMRequest(messages=(Message("user", text),), **fields)  # type: ignore[arg-type]


def test_reserve_commit_release_accounting() -> None:
    budget = Budget(max_calls=3, max_tokens=1000)
    first = budget.reserve(tokens=400, usd=0.0)
    second = budget.reserve(tokens=400, usd=0.0)
    assert budget.remaining_calls == 1
    assert budget.remaining_tokens == 200
    first.commit(Usage(50, 10), 0.0)
    second.release()
    assert (budget.calls, budget.tokens, budget.usd) == (1, 60, 0.0)
    assert budget.remaining_calls == 2
    assert budget.snapshot()["in_flight_calls"] == 0
    second.release()  # releasing twice is harmless
    with pytest.raises(PromptoptError, match="already"):
        first.commit(Usage(1, 1), 0.0)


@pytest.mark.parametrize(
    ("limits", "tokens", "usd", "name"),
    [
        ({"max_calls": 0}, 1, 0.0, "max_calls"),
        ({"max_tokens": 99}, 100, 0.0, "max_tokens"),
        ({"max_usd": 0.5}, 1, 0.75, "max_usd"),
    ],
)
def test_each_limit_is_named(limits: dict, tokens: int, usd: float, name: str) -> None:
    budget = Budget(**limits)
    with pytest.raises(BudgetExceededError, match=name):
        budget.reserve(tokens=tokens, usd=usd)
    assert budget.snapshot()["in_flight_calls"] == 0


def test_message_says_spent_and_limit() -> None:
    budget = Budget(max_calls=1)
    budget.reserve(tokens=0, usd=0).commit(Usage(), 0.0)
    with pytest.raises(BudgetExceededError) as info:
        budget.reserve(tokens=0, usd=0)
    assert "max_calls=1" in str(info.value) and "1 spent" in str(info.value)


def test_invalid_limits_and_reservations() -> None:
    with pytest.raises(ConfigError, match="max_calls"):
        Budget(max_calls=-1)
    with pytest.raises(ConfigError):
        Budget().reserve(tokens=-1, usd=0)


def test_unlimited_budget_counts() -> None:
    budget = Budget()
    budget.reserve(tokens=10, usd=0.1).commit(Usage(3, 4), 0.02)
    assert (budget.calls, budget.tokens, budget.usd) == (1, 7, 0.02)
    assert budget.remaining_calls is None and budget.remaining_usd is None


def test_threads_never_overshoot() -> None:
    budget = Budget(max_calls=50)
    granted = []
    refused = []

    def work() -> None:
        for _ in range(20):
            try:
                reservation = budget.reserve(tokens=1, usd=0.0)
            except BudgetExceededError:
                refused.append(1)
                continue
            granted.append(reservation)
            reservation.commit(Usage(1, 0), 0.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == budget.calls == 50
    assert len(refused) == 8 * 20 - 50


@pytest.mark.parametrize("concurrency", [16, 64])
async def test_concurrent_calls_never_exceed_max_calls(concurrency: int) -> None:
    async def slow(request: LLMRequest) -> str:
        await asyncio.sleep(0.01)
        return "ok"

    budget = Budget(max_calls=5)
    llm = fake_llm(slow, budget=budget, max_concurrency=concurrency)
    results = await asyncio.gather(
        *(llm.acomplete(_request(f"q{i}")) for i in range(concurrency)), return_exceptions=True
    )
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(llm.backend.requests) == 5
    assert len(answered) == 5 and len(refused) == concurrency - 5
    assert budget.calls == 5 and budget.snapshot()["in_flight_calls"] == 0


async def test_budget_shared_by_two_clients() -> None:
    budget = Budget(max_calls=3)
    task = fake_llm(budget=budget)
    optimizer = fake_llm(model="rewrite", budget=budget)
    await task.achat("a")
    await optimizer.achat("b")
    await task.achat("c")
    with pytest.raises(BudgetExceededError):
        await optimizer.achat("d")
    assert budget.calls == 3


async def test_token_budget_uses_upper_bound_estimate() -> None:
    request = _request("x" * 30, max_tokens=10)
    assert estimate_tokens(request) == 10 + 8 + 10
    assert estimate_tokens(_request("hi", max_tokens=None, n=2)) == 1 + 8 + 2 * 512
    budget = Budget(max_tokens=27)
    llm = fake_llm(budget=budget)
    with pytest.raises(BudgetExceededError, match="max_tokens"):
        await llm.acomplete(request)
    assert llm.backend.requests == []


async def test_dollar_budget_reserves_at_price() -> None:
    prices = PriceTable({"openai:pricey": Price(1_000_000.0, 1_000_000.0)})  # $1 per token
    budget = Budget(max_usd=100.0)
    llm = fake_llm(provider="openai", model="pricey", prices=prices, budget=budget)
    with pytest.raises(BudgetExceededError, match="max_usd"):
        await llm.acomplete(_request("hi", max_tokens=200))
    response = await llm.acomplete(_request("hi", max_tokens=50))
    assert response.cost_usd == 2.0  # one prompt word, one answer word
    assert budget.usd == 2.0


async def test_retries_share_one_reservation_and_failures_release_it() -> None:
    budget = Budget(max_calls=1)
    llm = scripted_llm(
        ServerError("500"),
        ServerError("502"),
        "ok",
        budget=budget,
        retry=RetryPolicy(base_delay=0.0),
    )
    assert (await llm.acomplete(_request())).text == "ok"
    assert budget.calls == 1
    failing = scripted_llm(
        *[ServerError("down")] * 2,
        budget=Budget(max_calls=1),
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
    )
    with pytest.raises(ServerError):
        await failing.acomplete(_request())
    assert failing.budget.calls == 0
    assert failing.budget.remaining_calls == 1


async def test_cached_answers_reserve_nothing(tmp_path) -> None:
    from promptopt.llm import ResponseCache

    budget = Budget(max_calls=1)
    llm = fake_llm(budget=budget, cache=ResponseCache(tmp_path / "c"))
    for _ in range(5):
        await llm.acomplete(_request("same"))
    assert budget.calls == 1 and llm.stats.cache_hits == 4
    llm.cache.close()


async def test_cancelled_call_releases_reservation() -> None:
    started = asyncio.Event()

    async def hang(request: LLMRequest) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    budget = Budget(max_calls=1)
    llm = fake_llm(hang, budget=budget)
    call = asyncio.create_task(llm.acomplete(_request()))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert budget.remaining_calls == 1 and budget.calls == 0


def test_carried_spending_counts_against_every_limit() -> None:
    budget = Budget(max_calls=5, max_tokens=100, max_usd=1.0)
    budget.carry(calls=4, tokens=60, usd=0.5)  # what earlier processes of the run paid
    assert (budget.calls, budget.tokens, budget.usd) == (4, 60, 0.5)
    assert (budget.remaining_calls, budget.remaining_tokens) == (1, 40)
    with pytest.raises(BudgetExceededError, match="max_tokens"):
        budget.reserve(tokens=41, usd=0.0)
    budget.reserve(tokens=40, usd=0.5).commit(Usage(30, 10), 0.25)
    assert (budget.calls, budget.tokens, budget.usd) == (5, 100, 0.75)
    with pytest.raises(BudgetExceededError, match="max_calls=5 would be exceeded: 5 spent"):
        budget.reserve(tokens=0, usd=0.0)
    assert budget.snapshot()["carried_calls"] == 4


def test_replays_of_carried_calls_move_only_the_optimizers_figure() -> None:
    budget = Budget(max_calls=10)
    budget.carry(calls=6, tokens=0, usd=0.0)
    # a resumed run at its start: 6 paid, but the uninterrupted run had spent nothing here yet
    assert (budget.calls, budget.remaining_calls, budget.replay_remaining_calls) == (6, 4, 10)
    for _ in range(6):
        budget.replayed()
    assert (budget.calls, budget.remaining_calls, budget.replay_remaining_calls) == (6, 4, 4)
    budget.reserve(tokens=1, usd=0.0).commit(Usage(1, 0), 0.0)
    assert (budget.calls, budget.remaining_calls, budget.replay_remaining_calls) == (7, 3, 3)
    assert Budget().replay_remaining_calls is None


def test_carrying_negative_spending_is_refused() -> None:
    with pytest.raises(ConfigError, match="carried spending"):
        Budget(max_calls=1).carry(calls=-1, tokens=0, usd=0.0)


def test_a_resumed_client_cannot_spend_what_earlier_processes_spent() -> None:
    budget = Budget(max_calls=3)
    budget.carry(calls=2, tokens=0, usd=0.0)
    llm = fake_llm(lambda request: "ok", budget=budget)
    assert llm.chat("one") == "ok"
    with pytest.raises(BudgetExceededError, match="3 spent"):
        llm.chat("two")
    assert llm.stats.calls == 1 and budget.calls == 3
