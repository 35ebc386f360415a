"""A fake vLLM installation on a fake GPU: the async engine promptopt's ``vllm`` backend drives.

vLLM needs a CUDA GPU, so it cannot be installed where promptopt is built and
tested. :class:`FakeVLLM` stands in for the five names the backend takes from
it, with vLLM's own method names, arguments, output objects and fields (the data
objects are in :mod:`promptopt.testing.vllm_objects`; read
from vLLM's source at 0.11.0, the oldest release promptopt supports, and at
0.34.0; ``tests/llm/backends/test_vllm_interface.py`` compares the signatures
with an installed vLLM wherever one is importable):

- ``AsyncLLM.from_engine_args(engine_args)``, then ``generate(prompt,
  sampling_params, request_id)``, an async generator of ``RequestOutput``;
  ``abort(request_id)``; ``shutdown()``; ``get_tokenizer()``;
- ``AsyncEngineArgs``, ``SamplingParams`` (greedy ``n > 1`` is refused as vLLM
  refuses it), ``StructuredOutputsParams``, ``RequestOutputKind``;
- ``RequestOutput`` (``prompt_token_ids``, ``prompt_logprobs``, ``outputs``,
  ``finished``, ``num_cached_tokens``), ``CompletionOutput``, ``Logprob``.

It behaves as the engine does where the backend depends on it: requests are
decoded together, one token per engine step (continuous batching, so a long
generation holds nobody up); the engine binds to the first event loop it serves;
a request too long for ``max_model_len`` fails alone at ``generate``; a
cancelled ``generate`` aborts its request; prompt log-probabilities follow
``prompt_logprob_start`` and skip prefix-cache reads by default; structured
``choice`` decoding picks the likeliest token at each step; each engine starts an
engine-core child process that ``shutdown`` ends; and an engine asking for more
of the GPU than is free fails to start with vLLM's message. Token
log-probabilities come from a :class:`Script`, so tests can make them whatever
they need. ``FakeVLLM(prompt_logprob_start=False)`` is a release before
prompt-scoring rows (vLLM 0.11.0-0.33).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptopt.testing.vllm_objects import (
    AsyncEngineArgs,
    CompletionOutput,
    FakeTokenizer,
    Logprob,
    RequestOutput,
    RequestOutputKind,
    SamplingParams,
    ScoringSamplingParams,
    StructuredOutputsParams,
)

__all__ = [
    "AsyncEngineArgs",
    "CompletionOutput",
    "FakeAsyncLLM",
    "FakeGPU",
    "FakeTokenizer",
    "FakeVLLM",
    "Logprob",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
    "ScoringSamplingParams",
    "Script",
    "StructuredOutputsParams",
]

_BLOCK = 16  # tokens per KV-cache block, as vLLM's default on GPUs


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class Script:
    """What the fake model says: a log-probability per (context, next token) and free replies.

    ``logprob(context, token)`` takes the words before a token and the token; by
    default a fixed pseudo-random number in [-4, -0.1). ``reply(prompt, index,
    seed)`` is the text of the ``index``-th sample of a free generation.
    """

    logprob: Callable[[Sequence[str], str], float] | None = None
    reply: Callable[[str, int, int | None], str] | None = None

    def score(self, context: Sequence[str], token: str) -> float:
        if self.logprob is not None:
            return self.logprob(context, token)
        return -0.1 - 3.9 * _unit(tuple(context[-8:]), token)

    def text(self, prompt: str, index: int, seed: int | None) -> str:
        if self.reply is not None:
            return self.reply(prompt, index, seed)
        last = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
        return f"reply {index} to {last.strip()}" + (f" (seed {seed})" if seed is not None else "")


@dataclass
class FakeGPU:
    """One device's memory, shared by every fake engine built on it."""

    total_gib: float = 80.0
    used_gib: float = 0.0  # by engines, and by other processes where a test sets it

    @property
    def free_gib(self) -> float:
        return self.total_gib - self.used_gib


@dataclass
class _Running:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    texts: list[list[int]]  # each sample's whole reply, in tokens
    done: asyncio.Event = field(default_factory=asyncio.Event)
    produced: int = 0
    aborted: bool = False


class FakeAsyncLLM:
    """The fake of ``vllm.v1.engine.async_llm.AsyncLLM`` (``vllm.AsyncLLMEngine``)."""

    installation: FakeVLLM  # set on the subclass each FakeVLLM makes

    def __init__(self, engine_args: AsyncEngineArgs) -> None:
        vllm = self.installation
        vllm.load_attempts += 1
        share = engine_args.gpu_memory_utilization
        share = vllm.default_gpu_memory_utilization if share is None else share
        wanted = share * vllm.gpu.total_gib
        if vllm.gpu.free_gib < wanted:  # the worker's startup check, surfaced by the engine
            raise RuntimeError(
                "Engine core initialization failed. See root cause above. Failed core "
                f"proc(s): {{'EngineCore_DP0': 1}} (ValueError: Free memory on device "
                f"({vllm.gpu.free_gib:.2f}/{vllm.gpu.total_gib:.2f} GiB) on startup is less "
                f"than desired GPU memory utilization ({share}, {wanted:.2f} GiB). Decrease "
                "GPU memory utilization or reduce GPU memory used by other processes.)"
            )
        vllm.gpu.used_gib += wanted
        self._gib = wanted
        self.engine_args = engine_args
        self.max_model_len = engine_args.max_model_len or 2048
        self.tokenizer = FakeTokenizer()
        self.core = subprocess.Popen(  # the engine-core process: lives until shutdown
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        self.running: dict[str, _Running] = {}
        self.requests: list[tuple[str, list[int], SamplingParams]] = []  # every one added
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.steps: list[int] = []  # requests decoded together at each engine step
        self.prompt_tokens_computed = 0
        self._cache: set[tuple[int, ...]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stepper: asyncio.Task[None] | None = None
        self.errored = False
        self.is_stopped = False
        vllm.engines.append(self)

    @classmethod
    def from_engine_args(
        cls,
        engine_args: AsyncEngineArgs,
        start_engine_loop: bool = True,
        usage_context: Any = None,
        stat_loggers: Any = None,
    ) -> FakeAsyncLLM:
        return cls(engine_args)

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def shutdown(self) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        if self._stepper is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stepper.cancel)
        assert self.core.stdin is not None
        self.core.stdin.close()
        self.core.wait(30)
        self.installation.gpu.used_gib -= self._gib

    async def abort(self, request_id: str | Iterable[str]) -> None:
        for rid in [request_id] if isinstance(request_id, str) else list(request_id):
            running = self.running.pop(rid, None)
            if running is not None:
                running.aborted = True
                running.done.set()
                self.aborted.append(rid)

    async def generate(
        self,
        prompt: Any,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        lora_request: Any = None,
        trace_headers: Any = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # vLLM's output handler and queues live on one loop
            raise RuntimeError("the engine is bound to a different event loop")
        if self.is_stopped:
            raise RuntimeError("EngineDeadError: the engine was shut down")
        running = self._add(prompt, sampling_params, request_id)
        try:
            await running.done.wait()
            if running.aborted:
                return
            yield self._output(running)
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id)
            raise

    # -- the engine's side ----------------------------------------------------------------

    def _add(self, prompt: Any, params: SamplingParams, request_id: str) -> _Running:
        ids = list(prompt["prompt_token_ids"])
        budget = params.max_tokens or 16
        if len(ids) + (1 if params.prompt_logprobs is not None else budget) > self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                f"length of {self.max_model_len}. Make sure that `max_model_len` is no "
                "smaller than the number of text tokens."
            )
        if request_id in self.running:
            raise ValueError(f"Request id {request_id} already running.")
        self.requests.append((request_id, ids, params))
        self.prompt_tokens_computed += len(ids) - self._cache_hit(ids, params)
        texts = [self.tokenizer.encode(t, False) for t in self._replies(ids, params)]
        running = _Running(request_id, ids, params, [t[:budget] for t in texts])
        self.running[request_id] = running
        if self._stepper is None or self._stepper.done():
            self._stepper = asyncio.get_running_loop().create_task(self._step())
        return running

    def _cache_hit(self, ids: list[int], params: SamplingParams) -> int:
        caching = self.engine_args.enable_prefix_caching is not False
        limit = len(ids) - 1
        if getattr(params, "skip_reading_prefix_cache", params.prompt_logprobs is not None):
            limit = 0
        elif params.prompt_logprobs is not None:
            limit = min(limit, getattr(params, "prompt_logprob_start", None) or 0)
        hit = 0
        for end in range(_BLOCK, limit + 1, _BLOCK):
            if tuple(ids[:end]) not in self._cache:
                break
            hit = end
        if caching:
            self._cache.update(tuple(ids[:end]) for end in range(_BLOCK, len(ids) + 1, _BLOCK))
        return hit if caching else 0

    def _replies(self, ids: list[int], params: SamplingParams) -> list[str]:
        prompt = self.tokenizer.decode(ids)
        structured = params.structured_outputs
        if params.prompt_logprobs is not None:
            return [""] * params.n
        if structured is not None and structured.choice:
            return [self._constrained(ids, structured.choice)] * params.n
        if structured is not None and structured.json is not None:
            return ["{}"] * params.n
        return [self.installation.script.text(prompt, i, params.seed) for i in range(params.n)]

    def _constrained(self, ids: list[int], choices: list[str]) -> str:
        """vLLM's guided choice at temperature 0: the likeliest allowed token, step by step."""
        context = [self.tokenizer.words[i] for i in ids]
        options = [self.tokenizer.encode(c, False) for c in choices]
        step = 0
        while len(options) > 1:
            allowed = {o[step] for o in options if len(o) > step}
            if not allowed:
                break
            best = max(
                allowed,
                key=lambda t: self.installation.script.score(context, self.tokenizer.words[t]),
            )
            context.append(self.tokenizer.words[best])
            options = [o for o in options if len(o) > step and o[step] == best]
            step += 1
        return self.tokenizer.decode(options[0])

    async def _step(self) -> None:
        """The engine loop: every step decodes one token of every running request."""
        while self.running:
            await asyncio.sleep(self.installation.step_s)
            self.steps.append(len(self.running))
            for running in list(self.running.values()):
                running.produced += 1
                if running.produced >= max(1, max(len(t) for t in running.texts)):
                    del self.running[running.request_id]
                    self.finished.append(running.request_id)
                    running.done.set()

    def _output(self, running: _Running) -> RequestOutput:
        params = running.params
        ids = running.prompt_ids
        prompt_logprobs: list[dict[int, Logprob] | None] | None = None
        if params.prompt_logprobs is not None:
            start = getattr(params, "prompt_logprob_start", None)
            words = [self.tokenizer.words[i] for i in ids]
            prompt_logprobs = [None]
            for i in range(1, len(ids)):
                if start is not None and i <= start:
                    prompt_logprobs.append(None)
                    continue
                lp = self.installation.script.score(words[:i], words[i])
                prompt_logprobs.append({ids[i]: Logprob(lp, 1, words[i])})
        outputs = []
        for index, tokens in enumerate(running.texts):
            text = self.tokenizer.decode(tokens)
            reason = "length" if len(tokens) >= (params.max_tokens or 16) else "stop"
            for stop in params.stop or ():
                if stop in text:
                    text, reason = text.split(stop, 1)[0], "stop"
            outputs.append(CompletionOutput(index, text, tokens, None, None, reason))
        return RequestOutput(
            request_id=running.request_id,
            prompt=None,
            prompt_token_ids=ids,
            prompt_logprobs=prompt_logprobs,
            outputs=outputs,
            finished=True,
            num_cached_tokens=0,
        )


class FakeVLLM:
    """One fake installation of vLLM on one fake GPU: pass it as ``VLLMBackend(api=...)``.

    ``engines`` lists every engine built from it, ``load_attempts`` counts the
    tries, failed ones included.
    """

    def __init__(
        self,
        *,
        script: Script | None = None,
        gpu: FakeGPU | None = None,
        prompt_logprob_start: bool = True,
        step_s: float = 0.001,
        default_gpu_memory_utilization: float = 0.9,
    ) -> None:
        self.script = script or Script()
        self.gpu = gpu or FakeGPU()
        self.step_s = step_s
        self.default_gpu_memory_utilization = default_gpu_memory_utilization
        self.engines: list[FakeAsyncLLM] = []
        self.load_attempts = 0
        self.AsyncLLM = type("AsyncLLM", (FakeAsyncLLM,), {"installation": self})
        self.AsyncEngineArgs = AsyncEngineArgs
        self.SamplingParams = ScoringSamplingParams if prompt_logprob_start else SamplingParams
        self.StructuredOutputsParams = StructuredOutputsParams
        self.RequestOutputKind = RequestOutputKind

    @property
    def engine(self) -> FakeAsyncLLM:
        """The last engine built."""
        return self.engines[-1]
