"""The loopback test servers and their fault plan, spoken to over raw HTTP (no SDK)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import promptopt
from promptopt.errors import ConfigError
from promptopt.testing import FaultPlan
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.openai_server import OpenAITestServer

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **fields}


def _env_with_package() -> dict[str, str]:
    """The environment for a subprocess that must import this checkout's promptopt."""
    root = str(Path(promptopt.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json(content_type=None)


# -- the fault plan ---------------------------------------------------------------------------


def test_fault_plan_parses_its_spec() -> None:
    plan = FaultPlan.parse("429=0.1, 500=0.2,timeout=0.05,drop=0.05,validation=0.1", seed=3)
    assert plan.rates == {
        "429": 0.1,
        "500": 0.2,
        "drop": 0.05,
        "timeout": 0.05,
        "validation": 0.1,
    }
    assert plan.seed == 3 and plan.active
    assert not FaultPlan.parse("").active


@pytest.mark.parametrize(
    "spec", ["429", "429=x", "teapot=0.1", "200=0.1", "429=1.5", "429=0.6,500=0.6"]
)
def test_fault_plan_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        FaultPlan.parse(spec)


def test_fault_plan_is_deterministic_and_near_its_rates() -> None:
    plan = FaultPlan({"429": 0.2, "500": 0.1}, seed=7)
    decisions = [plan.decide(f"key{i}", 0) for i in range(5000)]
    assert decisions == [
        FaultPlan({"500": 0.1, "429": 0.2}, seed=7).decide(f"key{i}", 0) for i in range(5000)
    ]
    assert abs(decisions.count("429") / 5000 - 0.2) < 0.03
    assert abs(decisions.count("500") / 5000 - 0.1) < 0.03
    other_seed = [
        FaultPlan({"429": 0.2, "500": 0.1}, seed=8).decide(f"key{i}", 0) for i in range(5000)
    ]
    assert other_seed != decisions


def test_fault_plan_caps_faults_per_request() -> None:
    plan = FaultPlan({"500": 1.0}, max_per_request=2)
    assert [plan.decide("k", attempt) for attempt in range(4)] == ["500", "500", None, None]


# -- the OpenAI-compatible server -------------------------------------------------------------


async def test_openai_server_answers_and_counts() -> None:
    async with OpenAITestServer(model="loopback-1") as server:
        status, body = await post(f"{server.base_url}/chat/completions", chat("hello you", n=2))
        assert status == 200
        assert [c["message"]["content"] for c in body["choices"]] == ["hello you", "hello you"]
        assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base_url}/models") as reply:
                models = await reply.json()
            async with session.get(f"{server.root_url}/_stats") as reply:
                stats = await reply.json()
            async with session.post(f"{server.root_url}/_stats/reset") as reply:
                assert (await reply.json())["received"] == 0
    assert models["data"][0]["id"] == "loopback-1"
    assert stats["received"] == stats["answered"] == 1 and stats["faulted_total"] == 0


async def test_openai_server_honours_stop_and_max_tokens() -> None:
    async with OpenAITestServer() as server:
        url = f"{server.base_url}/chat/completions"
        _, stopped = await post(url, chat("a b STOP c", stop="STOP"))
        _, cut = await post(url, chat("a b c d", max_tokens=2))
        status, bad = await post(url, {"model": "m", "messages": []})
    assert stopped["choices"][0]["message"]["content"] == "a b "
    assert cut["choices"][0]["message"]["content"] == "a b"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert status == 400 and "messages" in bad["error"]["message"]


async def test_choices_are_picked_by_a_stable_hash() -> None:
    choices = ("red", "green", "blue")
    async with OpenAITestServer(choices=choices) as one, OpenAITestServer(choices=choices) as two:
        first = [await post(f"{one.base_url}/chat/completions", chat(f"q{i}")) for i in range(12)]
        again = [await post(f"{two.base_url}/chat/completions", chat(f"q{i}")) for i in range(12)]
    texts = [body["choices"][0]["message"]["content"] for _, body in first]
    assert texts == [body["choices"][0]["message"]["content"] for _, body in again]
    assert set(texts) <= set(choices) and len(set(texts)) > 1


@pytest.mark.parametrize("is_async", [False, True])
async def test_handler_decides_the_answer(is_async: bool) -> None:
    def shout(body: dict[str, Any]) -> str:
        return body["messages"][-1]["content"].upper()

    async def shout_later(body: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return shout(body)

    async with OpenAITestServer(handler=shout_later if is_async else shout) as server:
        _, body = await post(f"{server.base_url}/chat/completions", chat("hey"))
    assert body["choices"][0]["message"]["content"] == "HEY"


async def test_latency_is_awaited_concurrently() -> None:
    """All 100 requests are past their latency and inside the handler at once.

    The handler lets none of them answer before the last has arrived, so a server that
    served requests one at a time could never answer (a reply would be HTTP 500).
    """
    arrived = 0
    everyone = asyncio.Event()

    async def wait_for_everyone(body: dict[str, Any]) -> str:
        nonlocal arrived
        arrived += 1
        if arrived == 100:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 60)
        return body["messages"][-1]["content"]

    async with OpenAITestServer(latency=0.2, handler=wait_for_everyone) as server:
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(post(f"{server.base_url}/chat/completions", chat(f"q{i}")) for i in range(100))
        )
        waited = time.perf_counter() - started
    assert [status for status, _ in replies] == [200] * 100
    assert [body["choices"][0]["message"]["content"] for _, body in replies] == [
        f"q{i}" for i in range(100)
    ]
    assert server.stats.max_in_flight == 100 and server.stats.in_flight == 0
    assert waited >= 0.2  # the latency was awaited (a lower bound: load cannot break it)


async def test_api_key_is_checked_when_set() -> None:
    async with OpenAITestServer(api_key="right") as server:
        url = f"{server.base_url}/chat/completions"
        wrong, body = await post(url, chat("x"), {"Authorization": "Bearer wrong"})
        right, _ = await post(url, chat("x"), {"Authorization": "Bearer right"})
    assert (wrong, right) == (401, 200)
    assert body["error"]["type"] == "invalid_api_key"


async def test_same_faults_whatever_the_arrival_order() -> None:
    plan = FaultPlan({"429": 0.3, "500": 0.2}, seed=1, retry_after=1.5)
    outcomes = []
    for order in (range(40), reversed(range(40))):
        async with OpenAITestServer(faults=plan) as server:
            url = f"{server.base_url}/chat/completions"
            replies = {i: await post(url, chat(f"q{i}")) for i in order}
            outcomes.append([replies[i][0] for i in range(40)])
            stats = server.stats
        assert stats.received == 40 and stats.answered + stats.faulted_total == 40
    assert outcomes[0] == outcomes[1]
    assert {200, 429, 500} <= set(outcomes[0])


async def test_fault_replies_carry_retry_after_and_error_bodies() -> None:
    plan = FaultPlan({"429": 1.0}, retry_after=1.5)
    async with (
        OpenAITestServer(faults=plan) as server,
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/chat/completions", json=chat("x")) as reply,
    ):
        assert reply.status == 429
        assert reply.headers["Retry-After"] == "1.5"
        assert (await reply.json())["error"]["type"] == "rate_limit_exceeded"


async def test_validation_fault_answers_like_llamacpp_server() -> None:
    """HTTP 500 whose message is FastAPI's validation error, as llama-cpp-python's server sends."""
    async with OpenAITestServer(faults=FaultPlan({"validation": 1.0})) as server:
        status, body = await post(f"{server.base_url}/chat/completions", chat("x"))
    assert status == 500
    message = body["error"]["message"]
    assert message.startswith("1 validation error:\n  {'type': ")
    assert "'loc': ('body', 'temperature')" in message
    assert message.endswith("POST /v1/chat/completions")
    assert server.stats.faulted == {"validation": 1} and server.stats.answered == 0


async def test_drop_closes_the_connection_without_an_answer() -> None:
    async with OpenAITestServer(faults=FaultPlan({"drop": 1.0})) as server:
        with pytest.raises(aiohttp.ClientError):
            await post(f"{server.base_url}/chat/completions", chat("x"))
    assert server.stats.faulted == {"drop": 1} and server.stats.answered == 0


async def test_timeout_holds_the_request() -> None:
    plan = FaultPlan({"timeout": 1.0}, hang_s=0.3)
    async with OpenAITestServer(faults=plan) as server:
        started = time.perf_counter()
        status, _ = await post(f"{server.base_url}/chat/completions", chat("x"))
    assert status == 504 and time.perf_counter() - started >= 0.3


def test_thread_mode_serves_sync_callers() -> None:
    with OpenAITestServer() as server:
        request = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=json.dumps(chat("sync hi")).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            body = json.loads(reply.read())
    assert body["choices"][0]["message"]["content"] == "sync hi"
    assert server.stats.answered == 1


@pytest.mark.parametrize("module", ["openai_server", "anthropic_server"])
def test_subprocess_prints_its_base_url_first(module: str) -> None:
    command = [sys.executable, "-m", f"promptopt.testing.{module}", "--port", "0"]
    command += ["--latency", "0.01", "--faults", "500=0.5", "--seed", "0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env_with_package(),
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        server_root = base_url.removesuffix("/v1")
        with urllib.request.urlopen(f"{server_root}/_stats", timeout=5) as reply:
            assert json.loads(reply.read())["received"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


async def test_subprocess_server_holds_192_requests_then_answers_them_at_concurrency_32() -> None:
    """The subprocess server holds many requests at once, then answers them all, in order.

    Every first sighting of a request body hangs (a ``timeout`` fault with an hour's hang,
    at most one per body), so the server's own counters show when all 192 are held at
    once; the client then drops them and asks again, 32 at a time, and each body, seen
    before, is answered. How fast it answers is measured by ``benchmarks/throughput.py``.
    """
    command = [sys.executable, "-m", "promptopt.testing.openai_server", "--faults", "timeout=1.0"]
    command += ["--hang", "3600", "--max-faults-per-request", "1"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env_with_package()
    )
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        url, stats_url = f"{base_url}/chat/completions", base_url.removesuffix("/v1") + "/_stats"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def stats() -> dict[str, Any]:
                async with session.get(stats_url) as reply:
                    return await reply.json()

            async def until(done: Any) -> dict[str, Any]:
                while not done(now := await stats()):
                    await asyncio.sleep(0.05)
                return now

            held = [
                asyncio.ensure_future(session.post(url, json=chat(f"q{i}"))) for i in range(192)
            ]
            holding = await asyncio.wait_for(
                until(lambda s: s["in_flight"] == s["faulted_total"] == 192), 120
            )
            for request in held:
                request.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            await asyncio.wait_for(until(lambda s: s["in_flight"] == 0), 120)

            slots = asyncio.Semaphore(32)

            async def one(i: int) -> str:
                async with slots, session.post(url, json=chat(f"q{i}")) as reply:
                    return (await reply.json())["choices"][0]["message"]["content"]

            texts = await asyncio.gather(*(one(i) for i in range(192)))
            answered = await stats()
    finally:
        process.terminate()
        await process.wait()
    assert holding["received"] == 192 and holding["faulted"] == {"timeout": 192}
    assert texts == [f"q{i}" for i in range(192)]
    assert answered["received"] == 2 * 192 and answered["answered"] == 192
    assert answered["max_in_flight"] == 192  # while held; 32 at most afterwards


# -- the Anthropic Messages server ------------------------------------------------------------


async def test_anthropic_server_answers_in_the_messages_shape() -> None:
    async with AnthropicTestServer() as server:
        body = {
            "model": "claude-x",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "be nice"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi END there"}]}],
            "stop_sequences": ["END"],
        }
        status, reply = await post(f"{server.base_url}/v1/messages", body, ANTHROPIC_HEADERS)
    assert status == 200
    assert reply["type"] == "message" and reply["role"] == "assistant"
    assert reply["content"] == [{"type": "text", "text": "hi "}]
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "END")
    assert reply["usage"] == {"input_tokens": 5, "output_tokens": 1}
    assert reply["model"] == "claude-x"


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({"x-api-key": "k"}, {"max_tokens": 5}, 400, "invalid_request_error"),
        ({"anthropic-version": "2023-06-01"}, {"max_tokens": 5}, 401, "authentication_error"),
        (ANTHROPIC_HEADERS, {}, 400, "invalid_request_error"),
    ],
)
async def test_anthropic_server_rejects_like_the_api(
    headers: dict[str, str], body: dict[str, Any], status: int, kind: str
) -> None:
    async with AnthropicTestServer() as server:
        request = {"model": "c", "messages": [{"role": "user", "content": "x"}], **body}
        got, reply = await post(f"{server.base_url}/v1/messages", request, headers)
    assert got == status
    assert reply == {"type": "error", "error": {"type": kind, "message": reply["error"]["message"]}}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("429", "rate_limit_error"), ("529", "overloaded_error"), ("500", "api_error")],
)
async def test_anthropic_faults_use_anthropic_error_types(fault: str, kind: str) -> None:
    async with AnthropicTestServer(faults=FaultPlan({fault: 1.0})) as server:
        request = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        status, reply = await post(f"{server.base_url}/v1/messages", request, ANTHROPIC_HEADERS)
    assert status == int(fault) and reply["error"]["type"] == kind
