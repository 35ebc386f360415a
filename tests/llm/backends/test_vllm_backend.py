"""The vllm backend on vLLM's async engine, driven by the shipped fake (vLLM needs a GPU)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import pytest

from promptopt import aio
from promptopt.errors import BackendUnavailableError, BadRequestError, ConfigError, LLMError
from promptopt.llm import LLM
from promptopt.llm.backends._scoring import choice_logprobs
from promptopt.llm.backends.vllm import VLLMBackend
from promptopt.llm.models import ModelConfig, make_llm
from promptopt.llm.types import LLMRequest, Message
from promptopt.testing.vllm_engine import FakeGPU, FakeVLLM, Script


def ask(text: str, **fields) -> LLMRequest:
    return LLMRequest(messages=(Message("user", text),), max_tokens=fields.pop("max_tokens", 32),
                      **fields)  # fmt: skip


def backend(fake: FakeVLLM, **options) -> VLLMBackend:
    return VLLMBackend(model="org/model", api=fake, **options)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_missing_vllm_is_named_before_anything_runs(monkeypatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'promptopt\[vllm\]'"):
        VLLMBackend(model="org/model")
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        backend(FakeVLLM(), gpu_memory_utilization=1.5)


async def test_the_engine_is_built_on_first_use_and_served_from_one_loop() -> None:
    fake = FakeVLLM()
    vllm = backend(fake)
    assert fake.load_attempts == 0  # constructing the backend loads nothing
    try:
        first = await vllm.agenerate(ask("Say yes."))
        # other event loops (synchronous callers each run their own) reach the same engine,
        # which would refuse a second loop
        second = await aio.in_thread(aio.run, vllm.agenerate(ask("Say no.")))
    finally:
        await vllm.aclose()
    assert first.text == "reply 0 to Say yes." and second.text == "reply 0 to Say no."
    assert fake.load_attempts == 1 and len(fake.engines) == 1
    prompt, params = fake.engine.requests[0][1:]
    assert fake.engine.tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert params.output_kind is fake.RequestOutputKind.FINAL_ONLY


async def test_the_default_concurrency_fills_the_engines_batches() -> None:
    fake = FakeVLLM()
    llm = make_llm(ModelConfig(model="vllm:org/model", options={"api": fake}))
    assert llm.max_concurrency == 256
    try:
        answers = await asyncio.gather(*(llm.acomplete(ask(f"Echo {i}.")) for i in range(100)))
    finally:
        await llm.aclose()
    assert [a.text for a in answers] == [f"reply 0 to Echo {i}." for i in range(100)]
    assert max(fake.engine.steps) == 100  # every request decoded in one step, not 8 at a time


async def test_a_long_generation_holds_nobody_up() -> None:
    script = Script(reply=lambda prompt, index, seed: "word " * (60 if "long" in prompt else 2))
    fake = FakeVLLM(script=script)
    vllm = backend(fake)
    try:
        long = asyncio.ensure_future(vllm.agenerate(ask("a long one", max_tokens=200)))
        await asyncio.sleep(0.01)
        short = await asyncio.gather(*(vllm.agenerate(ask(f"short {i}")) for i in range(10)))
        assert not long.done()  # the short requests were answered while it ran
        assert len((await long).text.split()) == 60
    finally:
        await vllm.aclose()
    assert all(r.text == "word word " for r in short)
    assert fake.engine.finished[-1] == fake.engine.requests[0][0]


async def test_a_bad_request_among_50_fails_alone() -> None:
    fake = FakeVLLM()
    vllm = backend(fake, max_model_len=256)
    requests = [ask(f"Row {i}.") for i in range(50)]
    requests[17] = ask("too long " * 200)
    try:
        results = await asyncio.gather(*(vllm.agenerate(r) for r in requests),
                                       return_exceptions=True)  # fmt: skip
        after = await vllm.agenerate(ask("And after it?"))
    finally:
        await vllm.aclose()
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [17]
    assert isinstance(results[17], BadRequestError)
    assert "maximum model length of 256" in str(results[17])
    assert [results[i].text for i in range(50) if i != 17] == [
        f"reply 0 to Row {i}." for i in range(50) if i != 17
    ]
    assert after.text == "reply 0 to And after it?" and fake.engine.aborted == []


async def test_a_cancelled_request_is_aborted_in_the_engine() -> None:
    script = Script(reply=lambda prompt, index, seed: "more " * 400)
    fake = FakeVLLM(script=script, step_s=0.005)
    vllm = backend(fake)
    try:
        await vllm.agenerate(ask("warm up", max_tokens=1))
        engine = fake.engine
        waiting = asyncio.ensure_future(vllm.agenerate(ask("Go on.", max_tokens=400)))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if engine.running:
                break
        (request_id,) = engine.running
        waiting.cancel()  # a budget stop, or Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(200):
            if request_id in engine.aborted:
                break
            await asyncio.sleep(0.005)
        assert request_id in engine.aborted and engine.running == {}
        assert (await vllm.agenerate(ask("Still there?", max_tokens=1))).text == "more"
    finally:
        await vllm.aclose()


def word_script(scores: dict[str, float]) -> Script:
    return Script(logprob=lambda context, token: scores.get(token, -0.5))


async def test_greedy_choices_are_whole_choice_log_probabilities() -> None:
    # "good" is the likelier first token, "great" the likelier whole choice: vLLM's guided
    # choice decoding would answer "good job"; the local backend, and this one, "great"
    fake = FakeVLLM(script=word_script({"good": -0.25, " ": -0.125, "job": -6.0, "great": -1.0}))
    vllm = backend(fake)
    try:
        greedy = await vllm.agenerate(ask("Rate it.", choices=("good job", "great")))
        sampled = await vllm.agenerate(ask("Rate it.", choices=("good job", "great"),
                                           temperature=1.0, seed=3))  # fmt: skip
        three = await vllm.agenerate(ask("Rate it.", choices=("good job", "great"), n=3))
    finally:
        await vllm.aclose()
    assert greedy.text == "great" and greedy.choice_logprobs == (-6.375, -1.0)
    assert three.texts == ("great",) * 3 and three.choice_logprobs == greedy.choice_logprobs
    # sampled choices are vLLM's structured outputs
    assert sampled.text == "good job" and sampled.choice_logprobs == ()
    (structured,) = [p for _, _, p in fake.engine.requests if p.structured_outputs]
    assert structured.structured_outputs.choice == ["good job", "great"]
    assert structured.seed == 3 and structured.temperature == 1.0


async def test_the_prompt_is_scored_once_where_vllm_reads_it_from_the_prefix_cache() -> None:
    computed = {}
    choices = ("alpha", "beta gamma", "delta", "epsilon")
    prompt = " ".join(f"word{i}" for i in range(60))
    for rows in (True, False):
        fake = FakeVLLM(prompt_logprob_start=rows)
        vllm = backend(fake)
        try:
            await vllm.agenerate(ask(prompt, choices=choices))  # fills the cache
            before = fake.engine.prompt_tokens_computed
            answer = await vllm.agenerate(ask(prompt, choices=choices))
        finally:
            await vllm.aclose()
        computed[rows] = fake.engine.prompt_tokens_computed - before
        assert len(answer.choice_logprobs) == 4
    prompt_len = len(fake.engine.requests[0][1]) - 1  # "alpha" is one token
    # with prompt-scoring rows every choice reads the prompt from the cache (up to one block
    # recomputed); before that release, every choice computes the whole prompt again
    assert computed[False] >= 4 * prompt_len
    assert computed[True] <= 4 * (16 + 3)


async def test_greedy_n_above_one_is_one_answer_repeated() -> None:
    fake = FakeVLLM()
    vllm = backend(fake)
    try:
        three = await vllm.agenerate(ask("Say it.", n=3))
        sampled = await vllm.agenerate(ask("Say it.", n=3, temperature=0.7, seed=5))
    finally:
        await vllm.aclose()
    assert three.texts == ("reply 0 to Say it.",) * 3
    assert fake.engine.requests[0][2].n == 1  # vLLM refuses greedy n > 1
    assert sampled.texts == tuple(f"reply {i} to Say it. (seed 5)" for i in range(3))


async def test_json_schemas_use_structured_outputs() -> None:
    fake = FakeVLLM()
    vllm = backend(fake)
    schema = '{"type": "object"}'
    try:
        reply = await vllm.agenerate(ask("JSON please.", json_schema=schema))
    finally:
        await vllm.aclose()
    assert reply.text == "{}" and fake.engine.requests[0][2].structured_outputs.json == schema


async def test_shutdown_ends_the_engine_core_process_and_frees_the_gpu() -> None:
    fake = FakeVLLM()
    vllm = backend(fake)
    await vllm.agenerate(ask("Hello."))
    pid = fake.engine.core.pid
    assert alive(pid) and fake.gpu.used_gib == pytest.approx(72.0)
    await vllm.aclose()
    await vllm.aclose()  # twice is harmless
    assert not alive(pid) and fake.gpu.used_gib == pytest.approx(0.0)
    with pytest.raises(LLMError, match="closed"):
        await vllm.agenerate(ask("Hello?"))


async def test_two_models_share_one_gpu_by_an_explicit_split() -> None:
    fake = FakeVLLM()
    task, optimizer = (backend(fake, gpu_memory_utilization=0.45) for _ in range(2))
    try:
        await task.agenerate(ask("one"))
        await optimizer.agenerate(ask("two"))
        assert len(fake.engines) == 2 and fake.gpu.used_gib == pytest.approx(72.0)
    finally:
        await task.aclose()
        await optimizer.aclose()


async def test_without_a_split_the_second_model_fails_once_naming_the_option() -> None:
    fake = FakeVLLM()
    first, second = backend(fake), VLLMBackend(model="org/other", api=fake)
    try:
        await first.agenerate(ask("one"))
        errors = []
        for _ in range(3):
            with pytest.raises(BackendUnavailableError) as caught:
                await second.agenerate(ask("two"))
            errors.append(caught.value)
    finally:
        await first.aclose()
        await second.aclose()
    assert errors[0] is errors[1] is errors[2]  # remembered, not retried
    assert fake.load_attempts == 1
    message = str(errors[0])
    assert "vllm:org/other cannot load beside vllm:org/model" in message
    assert "gpu_memory_utilization" in message


async def test_a_load_vllm_refuses_is_explained_and_remembered() -> None:
    fake = FakeVLLM(gpu=FakeGPU(total_gib=80.0, used_gib=40.0))  # another process holds half
    vllm = backend(fake, gpu_memory_utilization=0.6)
    try:
        for _ in range(2):
            with pytest.raises(BackendUnavailableError, match="Free memory on device") as caught:
                await vllm.agenerate(ask("one"))
    finally:
        await vllm.aclose()
    assert fake.load_attempts == 1 and "gpu_memory_utilization" in str(caught.value)


async def test_an_unknown_engine_option_is_a_clear_error() -> None:
    vllm = backend(FakeVLLM(), no_such_option=1)
    try:
        with pytest.raises(BackendUnavailableError, match="invalid vllm option.*no_such_option"):
            await vllm.agenerate(ask("one"))
    finally:
        await vllm.aclose()


# -- the same numbers as the local backend --------------------------------------------------

VOCAB = ["good", " ", "job", "great", "not", "bad", "at", "all"]


def scripted(context: Sequence[str], token: str) -> float:
    """A proper distribution over VOCAB after the last two words of ``context``."""
    raw = [math.sin(7.0 * (hash_of(context[-2:]) + 3 * i)) for i in range(len(VOCAB))]
    norm = math.log(sum(math.exp(r) for r in raw))
    return raw[VOCAB.index(token)] - norm if token in VOCAB else -1.0


def hash_of(words: Sequence[str]) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate("|".join(words)))


class ScriptedLlama:
    """Just what the local backend's choice scoring reads of a ``llama_cpp.Llama``."""

    def __init__(self, context: list[str]) -> None:
        self.context = list(context)
        self.n_tokens = len(context)
        self._ctx = self

    def n_vocab(self) -> int:
        return len(VOCAB)

    def eval(self, tokens: list[int]) -> None:
        del self.context[self.n_tokens :]
        self.context += [VOCAB[t] for t in tokens]
        self.n_tokens = len(self.context)

    def get_logits(self):
        words = self.context[: self.n_tokens]
        row = (ctypes.c_float * len(VOCAB))(*(scripted(words, w) for w in VOCAB))
        self._row = row  # kept alive while numpy reads it
        return ctypes.cast(row, ctypes.POINTER(ctypes.c_float))


async def test_choice_scores_equal_the_local_backends_on_the_same_log_probabilities() -> None:
    fake = FakeVLLM(script=Script(logprob=scripted))
    vllm = backend(fake)
    choices = ("good job", "great", "not bad at all", "bad")
    try:
        response = await vllm.agenerate(ask("How was it?", choices=choices))
    finally:
        await vllm.aclose()
    tokenizer = fake.engine.tokenizer
    prompt = fake.engine.requests[0][1][: -len(tokenizer.encode("good job", False))]
    llama = ScriptedLlama([tokenizer.words[i] for i in prompt])
    tokens = [
        [VOCAB.index(tokenizer.words[i]) for i in tokenizer.encode(c, False)] for c in choices
    ]
    local = choice_logprobs(llama, tokens)
    assert response.choice_logprobs == pytest.approx(local, abs=1e-5)
    assert response.text == choices[int(np.argmax(local))]


async def test_through_the_client_with_retries_and_budget() -> None:
    fake = FakeVLLM()
    llm = LLM(backend(fake), provider="vllm", model="org/model")
    try:
        reply = await llm.acomplete(ask("Through the client."))
    finally:
        await llm.aclose()
    assert reply.text == "reply 0 to Through the client."


TWO_ENGINES = """\
name: two-engines
program: {{system: "Classify.", user: "{{{{text}}}}", choices: [positive, negative]}}
data: {{path: rows.jsonl, inputs: [text], target: label, split: {{train: 2, val: 2, test: 2}}}}
models:
  task: {{model: "vllm:org/task"{task}}}
  optimizer: {{model: "vllm:org/optimizer"{optimizer}}}
metric: {{kind: exact}}
optimizer: opro
output: {output}
"""


@pytest.mark.parametrize("split", [False, True])
def test_a_run_with_two_engines_and_no_split_stops_before_anything(
    tmp_path, monkeypatch, split
) -> None:
    from promptopt import api

    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())  # "installed"
    rows = [{"text": f"row {i}", "label": "positive"} for i in range(6)]
    (tmp_path / "rows.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    share = ", options: {gpu_memory_utilization: 0.45}" if split else ""
    task = tmp_path / "task.yaml"
    task.write_text(TWO_ENGINES.format(task=share, optimizer=share,
                                       output=json.dumps(str(tmp_path / "traces"))))  # fmt: skip
    if split:
        assert api.plan(task).optimization_calls > 0
        return
    for attempt in (lambda: api.plan(task), lambda: api.optimize(task)):
        with pytest.raises(
            ConfigError, match="vllm:org/optimizer cannot load beside vllm:org/task"
        ):
            attempt()
    assert not (tmp_path / "traces").exists()
