"""The shipped fakes: handler fake, scripted queue, record/replay, and the conftest switch."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from promptopt.errors import ConfigError, ServerError, UnplannedCallError
from promptopt.llm import (
    LLM,
    FakeBackend,
    LLMRequest,
    LLMResponse,
    Message,
    ReplayBackend,
    RetryPolicy,
    ScriptedBackend,
    Usage,
    fake_llm,
    scripted_llm,
)


def _ask(text: str, **fields: object) -> LLMRequest:
    return LLMRequest(messages=(Message("system", "sys"), Message("user", text)), **fields)  # type: ignore[arg-type]


async def test_fake_echoes_last_user_message_and_counts_words() -> None:
    backend = FakeBackend()
    response = await backend.agenerate(_ask("one two three"))
    assert response.text == "one two three"
    assert response.usage == Usage(4, 3)
    assert backend.requests == [_ask("one two three")]


async def test_fake_constant_model_and_handlers() -> None:
    assert (await FakeBackend(model="positive").agenerate(_ask("x"))).text == "positive"
    upper = FakeBackend(lambda r: r.messages[-1].content.upper())
    assert (await upper.agenerate(_ask("hi"))).text == "HI"

    async def full(request: LLMRequest) -> LLMResponse:
        return LLMResponse(text="custom", usage=Usage(7, 7))

    assert (await FakeBackend(full).agenerate(_ask("hi"))).usage == Usage(7, 7)
    with pytest.raises(ConfigError, match="str or an LLMResponse"):
        await FakeBackend(lambda r: 42).agenerate(_ask("hi"))  # type: ignore[arg-type,return-value]


async def test_fake_llm_classifier_by_handler() -> None:
    llm = fake_llm(lambda r: "positive" if "good" in r.messages[-1].content else "negative")
    assert await llm.achat("a good film") == "positive"
    assert await llm.achat("a dull film") == "negative"
    assert len(llm.backend.requests) == 2


async def test_scripted_answers_in_order_and_raises_planned_errors() -> None:
    backend = ScriptedBackend(["first"])
    backend.enqueue(ServerError("boom"), LLMResponse(text="third", usage=Usage(1, 1)))
    assert (await backend.agenerate(_ask("a"))).text == "first"
    with pytest.raises(ServerError, match="boom"):
        await backend.agenerate(_ask("b"))
    assert (await backend.agenerate(_ask("c"))).text == "third"
    assert [r.messages[-1].content for r in backend.requests] == ["a", "b", "c"]
    assert backend.pending == 0


async def test_unplanned_call_message_tells_how_to_enqueue() -> None:
    llm = scripted_llm("only one")
    await llm.achat("q1")
    with pytest.raises(UnplannedCallError) as info:
        await llm.achat("q2")
    message = str(info.value)
    assert "enqueue(" in message and "'q2'" in message and "#2" in message


async def test_scripted_exception_class_items() -> None:
    llm = scripted_llm(ServerError, "ok", retry=RetryPolicy(base_delay=0.0))
    assert await llm.achat("x") == "ok"


async def test_record_then_replay_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "calls.jsonl"
    inner = FakeBackend(lambda r: f"answer to {r.messages[-1].content}")
    recorder = LLM(ReplayBackend(path, mode="record", inner=inner), provider="fake", model="m")
    assert await recorder.achat("q1") == "answer to q1"
    assert await recorder.achat("q2", max_tokens=5) == "answer to q2"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [set(line) for line in lines] == [{"key", "request", "response"}] * 2
    assert lines[0]["request"]["model"] == "m"
    assert LLMRequest.from_canonical(lines[1]["request"]).key() == lines[1]["key"]

    player = ReplayBackend(path)
    replayer = LLM(player, provider="fake", model="m")
    assert await replayer.achat("q2", max_tokens=5) == "answer to q2"
    assert await replayer.achat("q1") == "answer to q1"
    assert len(inner.requests) == 2
    with pytest.raises(UnplannedCallError) as info:
        await replayer.achat("q3")
    message = str(info.value)
    assert "PROMPTOPT_RECORD=1" in message and "mode='record'" in message
    assert str(path) in message and "'q3'" in message
    with pytest.raises(UnplannedCallError):  # same text, other settings: another request
        await replayer.achat("q1", temperature=0.7)


async def test_record_env_switches_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PROMPTOPT_RECORD", "1")
    backend = ReplayBackend(path, inner=FakeBackend())
    assert backend.mode == "record"
    await backend.agenerate(_ask("hello"))
    monkeypatch.delenv("PROMPTOPT_RECORD")
    assert (await ReplayBackend(path).agenerate(_ask("hello"))).text == "hello"


def test_record_mode_needs_a_real_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inner="):
        ReplayBackend(tmp_path / "x.jsonl", mode="record")
    with pytest.raises(ConfigError, match="'sideways'"):
        ReplayBackend(tmp_path / "x.jsonl", mode="sideways")  # type: ignore[arg-type]


async def test_corrupt_recording_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "k"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        await ReplayBackend(path).agenerate(_ask("x"))


def test_conftest_switch_blocks_outside_network_but_not_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    assert os.environ["PROMPTOPT_BLOCK_NETWORK"] == "1"
    assert os.environ["PROMPTOPT_CACHE_DIR"].startswith(str(tmp_path))
    assert "OPENAI_API_KEY" not in os.environ
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(RuntimeError, match="unplanned real call"),
    ):
        sock.connect(("203.0.113.7", 443))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(RuntimeError, match="unplanned real call"),
    ):
        sock.connect(("api.openai.com", 443))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass


async def test_conftest_switch_blocks_asyncio_connections() -> None:
    import asyncio

    with pytest.raises(RuntimeError, match="unplanned real call"):
        await asyncio.wait_for(asyncio.open_connection("203.0.113.7", 443), timeout=5)


def test_conftest_switch_blocks_name_lookups_but_not_localhost() -> None:
    with pytest.raises(RuntimeError, match="unplanned real call to 'api.anthropic.com'"):
        socket.getaddrinfo(b"api.anthropic.com", 443)
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo(None, 0, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
