"""The LLM client stack: cost, listeners, replay, concurrency, errors, sync use, exports."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import promptopt.llm
from promptopt.errors import ConfigError, LLMError, RateLimitError
from promptopt.llm import (
    LLM,
    CallEvent,
    FakeBackend,
    LLMRequest,
    LLMResponse,
    Message,
    Price,
    PriceTable,
    RetryPolicy,
    Usage,
    fake_llm,
    scripted_llm,
)

REQUEST = LLMRequest(messages=(Message("user", "what is two plus two"),))


async def test_fills_model_and_prices_the_answer() -> None:
    prices = PriceTable({"openai:m": Price(1.0, 2.0)})
    llm = scripted_llm(
        LLMResponse(text="four", usage=Usage(1000, 500)),
        provider="openai",
        model="m",
        prices=prices,
    )
    response = await llm.acomplete(REQUEST)
    assert llm.backend.requests[0].model == "m"
    assert response.cost_usd == pytest.approx(0.002)
    assert response.model == "m" and not response.cached and response.latency_s > 0
    assert llm.stats.snapshot() == {
        "calls": 1,
        "cache_hits": 0,
        "failures": 0,
        "retries": 0,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cost_usd": pytest.approx(0.002),
        "busy_s": pytest.approx(llm.stats.busy_s),
        "total_tokens": 1500,
    }
    assert llm.stats.busy_s > 0


async def test_busy_time_counts_overlapping_calls_once() -> None:
    """Two calls forced to overlap: busy time is under their sum, and within the wall time."""
    started: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
    spans: list[float] = []

    async def handler(request: LLMRequest) -> str:
        me = int(request.messages[-1].content)
        t0 = time.perf_counter()
        started[me].set()
        await started[1 - me].wait()  # neither ends before both began
        await asyncio.sleep(0.05)
        spans.append(time.perf_counter() - t0)
        return "ok"

    llm = LLM(FakeBackend(handler), provider="fake", model="m")
    t0 = time.perf_counter()
    await asyncio.gather(*(llm.acomplete(LLMRequest(messages=(Message("user", str(i)),)))
                           for i in (0, 1)))  # fmt: skip
    wall = time.perf_counter() - t0
    assert max(spans) <= llm.stats.busy_s <= wall
    assert llm.stats.busy_s < sum(spans)


async def test_unknown_and_free_models_cost_nothing() -> None:
    prices = PriceTable()
    assert prices.cost("openai", "gpt-4o-mini", Usage(1_000_000, 0)) == pytest.approx(0.15)
    assert prices.known("openai", "gpt-4o-2024-08-06")
    assert prices.known("anthropic", "claude-sonnet-4-20250514")
    assert not prices.known("openai", "my-finetune")
    assert prices.cost("openai", "my-finetune", Usage(10**6, 10**6)) == 0.0
    assert prices.known("local", "smollm2")
    assert prices.cost("local", "gpt-4o", Usage(10**6, 10**6)) == 0.0
    with pytest.raises(ConfigError):
        PriceTable({"no-colon": Price(1, 1)})
    with pytest.raises(ConfigError, match="input_per_mtok"):
        PriceTable({"openai:x": {"input": 1}})
    assert PriceTable({"openai:x": {"input_per_mtok": 1, "output_per_mtok": 3}}).known(
        "openai", "x"
    )


async def test_listeners_see_success_cache_and_failure(tmp_path) -> None:
    from promptopt.errors import BadRequestError
    from promptopt.llm import ResponseCache

    events: list[CallEvent] = []
    llm = scripted_llm(
        "four",
        BadRequestError("nope"),
        listeners=[events.append],
        cache=ResponseCache(tmp_path / "c"),
    )
    await llm.acomplete(REQUEST)
    await llm.acomplete(REQUEST)
    other = LLMRequest(messages=(Message("user", "other"),))
    with pytest.raises(BadRequestError):
        await llm.acomplete(other)
    ok, hit, failed = events
    assert (ok.cached, ok.attempts, ok.error, ok.response.text) == (False, 1, None, "four")
    assert ok.key == llm.key(REQUEST) and ok.request.model == "scripted"
    assert (ok.provider, ok.model) == ("fake", "scripted")
    assert ok.started_at > 1e9 and ok.duration_s >= 0
    assert (hit.cached, hit.attempts, hit.response.cost_usd) == (True, 0, 0.0)
    assert failed.response is None and failed.error == "BadRequestError: nope"
    assert failed.attempts == 1
    llm.cache.close()


async def test_broken_listener_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: CallEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[CallEvent] = []
    llm = fake_llm(listeners=[broken])
    llm.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="promptopt.llm.client"):
        assert (await llm.acomplete(REQUEST)).text == REQUEST.messages[0].content
    assert len(seen) == 1
    assert "listener" in caplog.text


async def test_replay_hook_answers_before_cache_and_backend() -> None:
    recorded = LLMResponse(text="from the store", usage=Usage(5, 3), cost_usd=1.0)
    asked: list[str] = []
    events: list[CallEvent] = []

    def replay(key: str) -> LLMResponse | None:
        asked.append(key)
        return recorded if len(asked) == 1 else None

    llm = fake_llm(replay=replay, listeners=[events.append])
    first = await llm.acomplete(REQUEST)
    second = await llm.acomplete(REQUEST)
    assert first.text == "from the store" and first.cached and first.cost_usd == 0.0
    assert second.text == REQUEST.messages[0].content and not second.cached
    assert asked == [llm.key(REQUEST)] * 2
    assert len(llm.backend.requests) == 1
    assert (llm.stats.cache_hits, llm.stats.calls) == (1, 1)
    assert [e.cached for e in events] == [True, False]


async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def slow(request: LLMRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return "ok"

    llm = fake_llm(slow, max_concurrency=3)
    await asyncio.gather(*(llm.achat(f"q{i}") for i in range(20)))
    assert peak == 3


async def test_sdk_exceptions_are_wrapped() -> None:
    class Leaky:
        provider = "leaky"

        async def agenerate(self, request: LLMRequest) -> LLMResponse:
            raise KeyError("sdk internals")

        async def aclose(self) -> None:
            return None

    events: list[CallEvent] = []
    llm = LLM(Leaky(), provider="fake", model="m", listeners=[events.append])
    with pytest.raises(LLMError, match="KeyError") as info:
        await llm.acomplete(REQUEST)
    assert isinstance(info.value.__cause__, KeyError)
    assert llm.stats.failures == 1 and events[0].error.startswith("LLMError")


async def test_backend_returning_junk_is_an_error() -> None:
    class Junk:
        provider = "junk"

        async def agenerate(self, request: LLMRequest) -> LLMResponse:
            return "plain text"  # type: ignore[return-value]

        async def aclose(self) -> None:
            return None

    with pytest.raises(LLMError, match="not an LLMResponse"):
        await LLM(Junk(), provider="fake", model="m").acomplete(REQUEST)


async def test_achat_builds_messages() -> None:
    llm = scripted_llm("a", "b")
    assert await llm.achat("hello", system="be brief", temperature=0.5) == "a"
    sent = llm.backend.requests[0]
    assert [m.role for m in sent.messages] == ["system", "user"]
    assert sent.temperature == 0.5
    turns = [Message("user", "hi"), Message("assistant", "yo"), Message("user", "again")]
    assert await llm.achat(turns) == "b"
    assert llm.backend.requests[1].messages == tuple(turns)
    with pytest.raises(ConfigError, match="invalid request fields"):
        await llm.achat("x", temprature=1)


def test_sync_calls_share_one_loop_so_loop_bound_backends_work() -> None:
    class LoopBound:
        """Like an HTTP pool: remembers the loop of its first call and refuses any other."""

        provider = "bound"

        def __init__(self) -> None:
            self.loop: asyncio.AbstractEventLoop | None = None
            self.closed_on: asyncio.AbstractEventLoop | None = None

        async def agenerate(self, request: LLMRequest) -> LLMResponse:
            loop = asyncio.get_running_loop()
            self.loop = self.loop or loop
            if loop is not self.loop:
                raise RuntimeError("Event loop is closed")
            return LLMResponse(text=request.messages[-1].content)

        async def aclose(self) -> None:
            self.closed_on = asyncio.get_running_loop()

    backend = LoopBound()
    llm = LLM(backend, provider="fake", model="m", max_concurrency=1)
    assert llm.complete(REQUEST).text == REQUEST.messages[0].content
    assert llm.chat("again") == "again"
    assert [llm.chat(f"q{i}") for i in range(3)] == ["q0", "q1", "q2"]
    llm.close()
    assert backend.closed_on is backend.loop


def test_sync_calls_from_threads_share_the_concurrency_limit() -> None:
    import threading

    in_flight = 0
    peak = 0
    two_in = asyncio.Event()  # used only on the client's private loop

    async def slow(request: LLMRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            two_in.set()
        # the first call waits for a second one (however late its thread starts), then all go
        await asyncio.wait_for(two_in.wait(), 60)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return "ok"

    llm = fake_llm(slow, max_concurrency=2)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(llm.chat("q"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    llm.close()
    assert answers == ["ok"] * 8 and peak == 2


async def test_complete_inside_a_loop_says_to_await() -> None:
    with pytest.raises(ConfigError, match="acomplete"):
        fake_llm().complete(REQUEST)


async def test_retry_then_success_reports_attempts() -> None:
    events: list[CallEvent] = []
    llm = scripted_llm(
        RateLimitError(retry_after=0),
        "ok",
        listeners=[events.append],
        retry=RetryPolicy(base_delay=0.0),
    )
    await llm.acomplete(REQUEST)
    assert events[0].attempts == 2 and llm.stats.retries == 1


async def test_aclose_closes_backend() -> None:
    closed = []

    class Closing:
        provider = "c"

        async def agenerate(self, request: LLMRequest) -> LLMResponse:
            return LLMResponse(text="x")

        async def aclose(self) -> None:
            closed.append(True)

    async with LLM(Closing(), provider="fake", model="m") as llm:
        await llm.acomplete(REQUEST)
    assert closed == [True]


def test_invalid_concurrency() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        fake_llm(max_concurrency=0)


def test_public_names_of_the_llm_package() -> None:
    expected = {
        "DEFAULT_MODEL",
        "LLM",
        "Backend",
        "Budget",
        "CachePolicy",
        "CallEvent",
        "FakeBackend",
        "HttpProvider",
        "LLMRequest",
        "LLMResponse",
        "Listener",
        "Message",
        "ModelConfig",
        "ModelRef",
        "Price",
        "PriceTable",
        "ReplayBackend",
        "Reservation",
        "ResponseCache",
        "RetryPolicy",
        "Role",
        "ScriptedBackend",
        "Usage",
        "UsageStats",
        "default_cache_dir",
        "fake_llm",
        "make_backend",
        "make_llm",
        "messages",
        "parse_model",
        "providers",
        "scripted_llm",
    }
    assert set(promptopt.llm.__all__) == expected
    for name in expected:
        assert hasattr(promptopt.llm, name), name
