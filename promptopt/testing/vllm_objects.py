"""vLLM's data objects, faked: what its async engine takes and returns.

The parameter classes (``SamplingParams`` with vLLM's defaults and its refusal of
greedy ``n > 1``, ``StructuredOutputsParams``, ``AsyncEngineArgs``, ``RequestOutputKind``),
the output objects (``RequestOutput``, ``CompletionOutput``, ``Logprob``) and a
word-level tokenizer with a ChatML template. :mod:`promptopt.testing.vllm_engine`
builds the fake engine on them; ``tests/llm/backends/test_vllm_interface.py``
compares their fields with an installed vLLM's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "AsyncEngineArgs",
    "CompletionOutput",
    "FakeTokenizer",
    "Logprob",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
    "ScoringSamplingParams",
    "StructuredOutputsParams",
]


class RequestOutputKind(Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class StructuredOutputsParams:
    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None


@dataclass
class SamplingParams:
    """The fields of ``vllm.SamplingParams`` promptopt sets, with vLLM's defaults and checks."""

    n: int = 1
    temperature: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.prompt_logprobs is not None and self.prompt_logprobs < -1:
            raise ValueError(
                f"prompt_logprobs must be non-negative or -1, got {self.prompt_logprobs}."
            )
        if self.temperature < 1e-5 and self.n > 1:  # vLLM's _verify_greedy_sampling
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]


@dataclass
class ScoringSamplingParams(SamplingParams):
    """``SamplingParams`` of a release with prompt-scoring rows (``prompt_logprob_start``)."""

    prompt_logprob_start: int | None = None
    skip_reading_prefix_cache: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.skip_reading_prefix_cache is None:
            self.skip_reading_prefix_cache = self.prompt_logprobs is not None


@dataclass
class AsyncEngineArgs:
    """The engine arguments a test sets; unknown ones are a TypeError, as in vLLM."""

    model: str = "facebook/opt-125m"
    tokenizer: str | None = None
    seed: int | None = 0
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool | None = None
    dtype: str = "auto"
    quantization: str | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """One request's output so far, as ``vllm.RequestOutput`` (``finished`` when it is done);
    the same arguments, in the same order, as its ``__init__``."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool
    metrics: Any = None
    lora_request: Any = None
    encoder_prompt: str | None = None
    encoder_prompt_token_ids: list[int] | None = None
    num_cached_tokens: int | None = None


class FakeTokenizer:
    """Word-level tokens (words, single punctuation marks, runs of spaces) and a ChatML template."""

    bos_token_id = 1

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<pad>": 0, "<s>": 1}
        self.words: list[str] = ["<pad>", "<s>"]

    def id_of(self, word: str) -> int:
        if word not in self.vocab:
            self.vocab[word] = len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.id_of(w) for w in re.findall(r"<\|\w+\|>|\w+|[^\w\s]|\s+", text)]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.words[i] for i in token_ids if i > 1 or not skip_special_tokens)

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        tools: Any = None,
        *,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text
