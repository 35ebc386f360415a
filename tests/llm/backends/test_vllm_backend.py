"""The vllm backend's batching adapter, driven by a fake engine (vLLM needs a GPU)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from promptopt.errors import (
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    LLMError,
    ServerError,
)
from promptopt.llm.backends.vllm import VLLMBackend, vllm_sampling_params
from promptopt.llm.base import Backend
from promptopt.llm.types import LLMRequest, messages


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]


@dataclass
class FakeOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


@dataclass
class FakeEngine:
    """Mimics ``vllm.LLM.chat``: one output per conversation, in order; records every batch.

    With a ``gate``, each call sets ``entered`` and then waits until the gate opens.
    """

    delay_s: float = 0.0
    error: Exception | None = None
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    batches: list[tuple[list[list[dict[str, str]]], list[dict[str, Any]]]] = field(
        default_factory=list
    )
    active: int = 0
    max_active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def chat(self, conversations: list, sampling_params: list, use_tqdm: bool = True) -> list:
        assert use_tqdm is False
        assert len(conversations) == len(sampling_params)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.batches.append((conversations, sampling_params))
            self.entered.set()
            if self.gate is not None:
                assert self.gate.wait(60), "the test never opened the gate"
            time.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            return [
                self._answer(i, c, p)
                for i, (c, p) in enumerate(zip(conversations, sampling_params, strict=True))
            ]
        finally:
            with self._lock:
                self.active -= 1

    def _answer(self, index: int, conversation: list, params: dict[str, Any]) -> FakeOutput:
        if not isinstance(params, dict):  # a SamplingParams of the fake vllm module below
            params = {"choices": (), **params.kwargs}
        content = conversation[-1]["content"]
        if content == "TOO LONG":
            raise ValueError(
                "The decoder prompt (length 9999) is longer than the maximum model length"
            )
        if params["choices"]:
            texts = [params["choices"][-1]] * params["n"]
        else:
            texts = [f"echo {content} #{k}" for k in range(params["n"])]
        prompt_ids = list(range(sum(len(m["content"].split()) for m in conversation)))
        return FakeOutput(
            request_id=f"{len(self.batches)}-{index}",
            prompt_token_ids=prompt_ids,
            outputs=[FakeCompletion(t, list(range(len(t.split())))) for t in texts],
        )


def fake_params(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def ask(text: str, **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=messages(("system", "be brief"), ("user", text)), **kwargs)


def make(engine: FakeEngine, **kwargs: Any) -> VLLMBackend:
    return VLLMBackend(model="org/model", engine=engine, sampling_params=fake_params, **kwargs)


def test_is_a_backend() -> None:
    backend = make(FakeEngine())
    assert isinstance(backend, Backend)
    assert VLLMBackend.provider == "vllm"


async def test_concurrent_calls_become_one_batch_in_order() -> None:
    engine = FakeEngine()
    backend = make(engine, batch_window_s=0.05)
    responses = await asyncio.gather(*(backend.agenerate(ask(f"q{i}")) for i in range(20)))
    assert [r.text for r in responses] == [f"echo q{i} #0" for i in range(20)]
    assert 1 <= len(engine.batches) <= 2
    assert sum(len(convs) for convs, _ in engine.batches) == 20
    first_conv = engine.batches[0][0][0]
    assert first_conv == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q0"},
    ]


async def test_max_batch_caps_each_engine_call() -> None:
    """Full batches go at once; a partial one waits (here: for ever) until it fills up."""
    engine = FakeEngine()
    backend = make(engine, max_batch=8, batch_window_s=3600.0)
    calls = [asyncio.ensure_future(backend.agenerate(ask(f"q{i}"))) for i in range(20)]
    await asyncio.wait(calls[:16])
    assert [len(convs) for convs, _ in engine.batches] == [8, 8]
    assert not any(call.done() for call in calls[16:])
    calls += [asyncio.ensure_future(backend.agenerate(ask(f"q{i}"))) for i in range(20, 24)]
    responses = await asyncio.gather(*calls)
    assert [r.text for r in responses] == [f"echo q{i} #0" for i in range(24)]
    assert [len(convs) for convs, _ in engine.batches] == [8, 8, 8]


async def test_calls_arriving_during_a_batch_form_the_next_one() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    backend = make(engine, batch_window_s=0.0)
    first = asyncio.ensure_future(backend.agenerate(ask("first")))
    assert await asyncio.to_thread(engine.entered.wait, 60)  # the first batch is in the engine
    later = [asyncio.ensure_future(backend.agenerate(ask(f"later{i}"))) for i in range(5)]
    await asyncio.sleep(0)  # each later call has queued itself
    gate.set()
    results = await asyncio.gather(first, *later)
    assert [len(convs) for convs, _ in engine.batches] == [1, 5]
    assert [r.text for r in results] == ["echo first #0"] + [f"echo later{i} #0" for i in range(5)]
    assert engine.max_active == 1  # never two engine calls at once


async def test_sampling_params_carry_the_request() -> None:
    engine = FakeEngine()
    backend = make(engine)
    request = ask("hi", temperature=0.7, max_tokens=12, stop=("\n", "END"), seed=5, n=2)
    await backend.agenerate(request)
    [(_, [params])] = engine.batches
    assert params == {
        "temperature": 0.7,
        "max_tokens": 12,
        "stop": ("\n", "END"),
        "seed": 5,
        "n": 2,
        "choices": (),
    }


async def test_n_usage_model_and_ids() -> None:
    backend = make(FakeEngine())
    response = await backend.agenerate(ask("two words", n=3))
    assert response.texts == ("echo two words #0", "echo two words #1", "echo two words #2")
    assert response.text == response.texts[0]
    # prompt: "be brief" + "two words" = 4 tokens, counted once; completions: 3 x 4 tokens
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (4, 12)
    assert response.model == "org/model"
    assert response.raw_id == "1-0"
    assert response.latency_s > 0
    assert response.cached is False


async def test_choices_reach_the_params() -> None:
    engine = FakeEngine()
    backend = make(engine)
    response = await backend.agenerate(ask("sentiment?", choices=("positive", "negative")))
    assert response.text == "negative"
    assert engine.batches[0][1][0]["choices"] == ("positive", "negative")


async def test_one_bad_request_fails_alone() -> None:
    engine = FakeEngine()
    backend = make(engine, batch_window_s=0.05)
    texts = ["a", "TOO LONG", "b"]
    results = await asyncio.gather(
        *(backend.agenerate(ask(t)) for t in texts), return_exceptions=True
    )
    assert results[0].text == "echo a #0"
    assert isinstance(results[1], BadRequestError)
    assert "org/model" in str(results[1]) and "maximum model length" in str(results[1])
    assert results[2].text == "echo b #0"
    # the failed batch of 3, then each request on its own
    assert [len(convs) for convs, _ in engine.batches] == [3, 1, 1, 1]


async def test_engine_failure_is_a_server_error_for_everyone() -> None:
    engine = FakeEngine(error=RuntimeError("CUDA out of memory"))
    backend = make(engine, batch_window_s=0.05)
    results = await asyncio.gather(
        *(backend.agenerate(ask(f"q{i}")) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ServerError) for r in results)
    assert "CUDA out of memory" in str(results[0])
    assert len(engine.batches) == 1


async def test_wrong_output_count_is_an_llm_error() -> None:
    class ShortEngine(FakeEngine):
        def chat(self, conversations: list, sampling_params: list, use_tqdm: bool = True) -> list:
            return super().chat(conversations, sampling_params, use_tqdm)[:-1]

    backend = make(ShortEngine(), batch_window_s=0.05)
    results = await asyncio.gather(
        *(backend.agenerate(ask(f"q{i}")) for i in range(2)), return_exceptions=True
    )
    assert all(type(r) is LLMError for r in results)


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    engine = FakeEngine(delay_s=0.05)
    backend = make(engine, batch_window_s=0.02)
    doomed = asyncio.ensure_future(backend.agenerate(ask("doomed")))
    kept = asyncio.ensure_future(backend.agenerate(ask("kept")))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).text == "echo kept #0"
    assert doomed.cancelled()


async def test_closed_backend_refuses_calls() -> None:
    engine = FakeEngine()
    backend = make(engine)
    await backend.agenerate(ask("x"))
    await backend.aclose()
    with pytest.raises(LLMError, match="closed"):
        await backend.agenerate(ask("y"))


def test_works_across_event_loops() -> None:
    engine = FakeEngine()
    backend = make(engine)
    assert asyncio.run(backend.agenerate(ask("one"))).text == "echo one #0"
    assert asyncio.run(backend.agenerate(ask("two"))).text == "echo two #0"


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        VLLMBackend(model="m", max_batch=0)
    with pytest.raises(ConfigError, match="batch_window_s"):
        VLLMBackend(model="m", batch_window_s=-1)


async def test_missing_vllm_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    backend = VLLMBackend(model="org/model")  # constructing needs no vllm
    with pytest.raises(BackendUnavailableError, match=r"pip install 'promptopt\[vllm\]'"):
        await backend.agenerate(ask("x"))
    with pytest.raises(BackendUnavailableError):
        vllm_sampling_params(temperature=0, max_tokens=1, stop=(), seed=None, n=1, choices=())


def fake_vllm_module(*, structured: bool, guided: bool) -> types.ModuleType:
    """A stand-in ``vllm`` package with only what the backend touches."""
    module = types.ModuleType("vllm")
    sampling = types.ModuleType("vllm.sampling_params")

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    @dataclass
    class ChoiceParams:
        choice: list[str]

    sampling.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    if structured:
        sampling.StructuredOutputsParams = ChoiceParams  # type: ignore[attr-defined]
    if guided:
        sampling.GuidedDecodingParams = ChoiceParams  # type: ignore[attr-defined]
    module.sampling_params = sampling  # type: ignore[attr-defined]
    module.built = []  # type: ignore[attr-defined]

    class LLM(FakeEngine):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__()
            if kwargs["model"] == "missing/model":
                raise OSError("no such model")
            module.built.append(kwargs)  # type: ignore[attr-defined]

    module.LLM = LLM  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("structured", "guided", "key"),
    [(True, True, "structured_outputs"), (False, True, "guided_decoding"), (False, False, None)],
)
def test_real_factory_uses_what_the_vllm_version_has(
    monkeypatch: pytest.MonkeyPatch, structured: bool, guided: bool, key: str | None
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm_module(structured=structured, guided=guided))
    params = vllm_sampling_params(
        temperature=0.0, max_tokens=3, stop=("\n",), seed=1, n=1, choices=("yes", "no")
    )
    expected = {"temperature": 0.0, "max_tokens": 3, "stop": ["\n"], "seed": 1, "n": 1}
    constraint = {k: v for k, v in params.kwargs.items() if k not in expected}
    assert {k: params.kwargs[k] for k in expected} == expected
    if key is None:
        assert constraint == {}
    else:
        assert list(constraint) == [key]
        assert constraint[key].choice == ["yes", "no"]
    plain = vllm_sampling_params(
        temperature=1.0, max_tokens=None, stop=(), seed=None, n=2, choices=()
    )
    assert plain.kwargs == {
        "temperature": 1.0,
        "max_tokens": None,
        "stop": None,
        "seed": None,
        "n": 2,
    }


async def test_engine_is_built_lazily_once(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm = fake_vllm_module(structured=True, guided=False)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    backend = VLLMBackend(model="org/model", dtype="half", gpu_memory_utilization=0.5)
    assert vllm.built == []
    await asyncio.gather(*(backend.agenerate(ask(f"q{i}")) for i in range(3)))
    await backend.agenerate(ask("again"))
    assert vllm.built == [{"model": "org/model", "dtype": "half", "gpu_memory_utilization": 0.5}]


async def test_engine_that_cannot_load_is_a_bad_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm_module(structured=True, guided=False))
    backend = VLLMBackend(model="missing/model", batch_window_s=0.02)
    results = await asyncio.gather(
        *(backend.agenerate(ask(f"q{i}")) for i in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, BadRequestError) for r in results)
    assert "'missing/model'" in str(results[0]) and "no such model" in str(results[0])
