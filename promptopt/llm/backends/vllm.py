"""The ``vllm`` backend: vLLM's async engine in this process, on an event loop of its own.

* One ``AsyncLLM`` (``vllm.AsyncLLMEngine``) per backend, built on the first
  request and served from a dedicated loop thread (:class:`promptopt.aio.LoopThread`):
  the engine binds to the first loop it runs on, while promptopt's callers come
  from many loops. Each ``agenerate`` reaches it through :func:`promptopt.aio.await_on`
  and becomes one ``generate`` request of the engine, which decodes every request
  it holds together (continuous batching): a long generation holds nobody up, a
  request vLLM refuses (too long, a bad parameter) fails alone, and a caller
  cancelled while its request runs has it aborted in the engine.
* ``choices`` at temperature 0 are answered as the ``local`` backend answers
  them: every choice's whole log-probability after the prompt (the prompt's token
  ids followed by the choice's, scored with ``prompt_logprobs``), the likeliest
  chosen, and every score returned in ``choice_logprobs`` for calibration. Where
  vLLM has prompt-scoring rows (``prompt_logprob_start``), the prompt is read from
  the prefix cache, so it is computed once for all the choices; before that
  release every choice computes the prompt again. Sampled ``choices`` and JSON
  schemas use vLLM's structured outputs. ``n > 1`` at temperature 0 is one greedy
  answer repeated (vLLM refuses greedy ``n > 1``).
* Several ``vllm:`` models in one process share one GPU only by an explicit
  split: each names its ``gpu_memory_utilization``, and together they stay at or
  below 1. A second engine without one is refused before it loads, naming the
  option; a failed load (this, or vLLM's own failure) is remembered, so later
  requests fail at once instead of loading again.
* ``aclose()`` aborts what is in flight and shuts the engine down, its
  engine-core process and GPU memory included.

Engine arguments (``dtype``, ``max_model_len``, ``quantization``, ``tokenizer``, ...)
are the backend's keyword options and go to ``AsyncEngineArgs``. ``api`` replaces
the installed vLLM with an object holding the same five names (tests pass
:class:`promptopt.testing.vllm_engine.FakeVLLM`). Supported: vLLM 0.11.0 and later
(the first release whose sampling parameters take ``structured_outputs``, and
whose engines are all V1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from promptopt import aio
from promptopt.errors import (
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    LLMError,
    ServerError,
)
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["MIN_VERSION", "VLLMBackend", "load_api"]

MIN_VERSION = "0.11.0"
_INSTALL_HINT = f"pip install 'promptopt[vllm]' (vLLM >= {MIN_VERSION}; it needs a CUDA GPU)"
_SPLIT_HINT = (
    "several vllm: models in one process share one GPU only by an explicit split: give each "
    "model's options a gpu_memory_utilization, fractions of the GPU's memory that sum to at "
    "most 1 (for example 0.45 and 0.45)"
)
_NAMES = ("AsyncLLM", "AsyncEngineArgs", "SamplingParams", "StructuredOutputsParams",
          "RequestOutputKind")  # fmt: skip

# The engines loaded in this process: backend id -> (model, its gpu_memory_utilization).
_LOADED: dict[int, tuple[str, float | None]] = {}
_LOADED_LOCK = threading.Lock()
_REQUEST_IDS = itertools.count()
T = TypeVar("T")


def load_api() -> Any:
    """The installed vLLM's five names the backend uses, as one namespace."""
    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailableError(
            f"the 'vllm' backend needs the 'vllm' package, which is not installed: {_INSTALL_HINT}"
        )
    sampling = importlib.import_module("vllm.sampling_params")
    if not hasattr(sampling, "StructuredOutputsParams"):
        raise BackendUnavailableError(f"this vLLM is older than {MIN_VERSION}: {_INSTALL_HINT}")
    return _Api(
        AsyncLLM=importlib.import_module("vllm.v1.engine.async_llm").AsyncLLM,
        AsyncEngineArgs=importlib.import_module("vllm.engine.arg_utils").AsyncEngineArgs,
        SamplingParams=sampling.SamplingParams,
        StructuredOutputsParams=sampling.StructuredOutputsParams,
        RequestOutputKind=sampling.RequestOutputKind,
    )


@dataclasses.dataclass(frozen=True)
class _Api:
    AsyncLLM: Any
    AsyncEngineArgs: Any
    SamplingParams: Any
    StructuredOutputsParams: Any
    RequestOutputKind: Any


def _fields(cls: Any) -> frozenset[str]:
    """The fields a parameters class takes: msgspec structs (vLLM's) and dataclasses."""
    names = getattr(cls, "__struct_fields__", None)
    if names is None and dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
    return frozenset(names or inspect.signature(cls).parameters)


def _split_problem(
    model: str, share: float | None, others: Sequence[tuple[str, float | None]]
) -> str:
    if not others:
        return ""
    loaded = ", ".join(f"vllm:{m} ({'unset' if s is None else s})" for m, s in others)
    if share is None or any(s is None for _, s in others):
        return (f"vllm:{model} cannot load beside {loaded} without a memory split: each engine "
                f"would take vLLM's default share of the GPU; {_SPLIT_HINT}")  # fmt: skip
    total = share + sum(s or 0.0 for _, s in others)
    if total > 1.0 + 1e-9:
        return (f"vllm:{model} asks for gpu_memory_utilization={share} beside {loaded}: "
                f"{total:g} of the GPU in all; {_SPLIT_HINT}")  # fmt: skip
    return ""


class VLLMBackend:
    """Runs requests on an in-process vLLM async engine (see the module's docstring)."""

    provider: ClassVar[str] = "vllm"
    default_concurrency: ClassVar[int] = 256
    """Requests in flight by default: enough to fill the engine's batches (vLLM's own
    ``max_num_seqs`` default is 256 or more), where an HTTP endpoint gets 8."""

    def __init__(
        self,
        *,
        model: str,
        api: Any | None = None,
        gpu_memory_utilization: float | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}"
            )
        if api is None and importlib.util.find_spec("vllm") is None:
            raise BackendUnavailableError(
                f"the 'vllm' backend needs the 'vllm' package, which is not installed: "
                f"{_INSTALL_HINT}"
            )
        self.model = model
        self.gpu_memory_utilization = gpu_memory_utilization
        self._api: Any = api
        self._engine_kwargs = engine_kwargs
        self._thread = aio.LoopThread(name=f"promptopt-vllm-{model.rsplit('/', 1)[-1]}")
        self._engine: Any = None
        self._tokenizer: Any = None
        self._load_error: LLMError | None = None
        self._choice_ids: dict[str, list[int]] = {}
        self._scoring_rows = False  # this vLLM's SamplingParams take prompt_logprob_start
        self._in_flight: set[str] = set()
        self._closed = False

    @staticmethod
    def check_together(models: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """ConfigError, before any engine loads, where these models (name, options) cannot
        share one GPU; the pre-flight checks of a run call it with the task's vllm: models."""
        shares = [(name, options.get("gpu_memory_utilization")) for name, options in models]
        for i, (model, share) in enumerate(shares):
            problem = _split_problem(model, share, shares[:i])
            if problem:
                raise ConfigError(problem)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r}, loaded={self._engine is not None!r})"

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        if self._closed:
            raise LLMError(f"the vllm backend for {self.model!r} is closed")
        return await aio.await_on(self._thread.loop, self._serve(request))

    async def on_engine(self, fn: Callable[[Any, Any], Awaitable[T]]) -> T:
        """Await ``fn(engine, api)`` on the engine's own loop, the engine loaded first.

        Raw access for what the backend does not wrap (a benchmark's direct
        ``engine.generate`` calls, a custom request): ``engine`` is the loaded
        ``AsyncLLM``, ``api`` the namespace of vLLM's classes.
        """
        if self._closed:
            raise LLMError(f"the vllm backend for {self.model!r} is closed")

        async def call() -> T:
            return await fn(self._ready(), self._api)

        return await aio.await_on(self._thread.loop, call())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._engine is not None:
            await aio.await_on(self._thread.loop, self._shutdown())
        self._release()
        self._thread.close(timeout=30)

    # -- on the engine's loop ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if self._in_flight:
            with contextlib.suppress(Exception):
                await engine.abort(sorted(self._in_flight))
        engine.shutdown()

    async def _serve(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        engine = self._ready()
        prompt = await self._prompt_ids(engine, request)
        if request.choices and request.temperature == 0:
            return await self._pick(engine, request, prompt, started)
        api = self._api
        greedy = request.temperature == 0
        kwargs: dict[str, Any] = {
            "n": 1 if greedy else request.n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            "output_kind": api.RequestOutputKind.FINAL_ONLY,
        }
        if request.choices:
            kwargs["structured_outputs"] = api.StructuredOutputsParams(choice=list(request.choices))
        elif request.json_schema:
            kwargs["structured_outputs"] = api.StructuredOutputsParams(json=request.json_schema)
        output = await self._final(engine, prompt, self._params(**kwargs))
        completions = list(output.outputs or ())
        if not completions:
            raise LLMError(f"vllm returned no completion for a request to {self.model!r}")
        texts = tuple(str(c.text) for c in completions)
        if greedy and request.n > 1:
            texts *= request.n
        return LLMResponse(
            text=texts[0],
            texts=texts,
            usage=Usage(len(prompt), sum(len(c.token_ids or ()) for c in completions)),
            latency_s=time.perf_counter() - started,
            raw_id=str(output.request_id),
            model=self.model,
        )

    async def _pick(
        self, engine: Any, request: LLMRequest, prompt: list[int], started: float
    ) -> LLMResponse:
        """A greedy choice: every choice's log-probability after the prompt, the likeliest chosen."""
        tokenizer = self._tokenizer
        tokens = [self._tokens_of(tokenizer, c) for c in request.choices]
        kwargs: dict[str, Any] = {
            "temperature": 0.0,
            "max_tokens": 1,
            "prompt_logprobs": 0,  # each prompt token's own log-probability, no alternatives
            "output_kind": self._api.RequestOutputKind.FINAL_ONLY,
        }
        if self._scoring_rows:
            # score the choice's tokens only; read the prompt from the prefix cache
            kwargs |= {"prompt_logprob_start": len(prompt) - 1, "skip_reading_prefix_cache": False}
        params = self._params(**kwargs)
        runs = [asyncio.ensure_future(self._final(engine, prompt + t, params)) for t in tokens]
        try:
            outputs = await asyncio.gather(*runs)
        except BaseException:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            raise
        scores = [self._choice_score(o, len(prompt)) for o in outputs]
        best = max(range(len(scores)), key=scores.__getitem__)
        return LLMResponse(
            text=request.choices[best],
            texts=(request.choices[best],) * request.n,
            usage=Usage(len(prompt), len(tokens[best])),
            latency_s=time.perf_counter() - started,
            raw_id=str(outputs[best].request_id),
            model=self.model,
            choice_logprobs=tuple(scores),
        )

    def _choice_score(self, output: Any, start: int) -> float:
        ids = list(output.prompt_token_ids or ())
        entries = list(output.prompt_logprobs or ())
        total = 0.0
        for i in range(start, len(ids)):
            entry = entries[i] if i < len(entries) else None
            if not entry or ids[i] not in entry:
                raise LLMError(f"vllm returned no log-probability for prompt token {i} of "
                               f"{self.model!r}")  # fmt: skip
            total += float(entry[ids[i]].logprob)
        return total

    async def _final(self, engine: Any, prompt: list[int], params: Any) -> Any:
        """Run one engine request to its end; abort it in the engine if the caller is cancelled."""
        request_id = f"promptopt-{next(_REQUEST_IDS)}"
        self._in_flight.add(request_id)
        final = None
        try:
            stream = engine.generate({"prompt_token_ids": prompt}, params, request_id)
            async with contextlib.aclosing(stream):
                async for output in stream:
                    final = output
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await engine.abort(request_id)
            if self._closed:
                raise LLMError(f"the vllm backend for {self.model!r} was closed") from None
            raise
        except LLMError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            self._in_flight.discard(request_id)
        if final is None or not final.finished:
            raise LLMError(f"vllm ended request {request_id} to {self.model!r} unfinished")
        return final

    def _params(self, **kwargs: Any) -> Any:
        try:
            return self._api.SamplingParams(**kwargs)
        except (ValueError, TypeError) as exc:
            raise BadRequestError(f"vllm refused the sampling parameters: {exc}") from exc

    def _error(self, exc: Exception) -> LLMError:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "EngineDeadError" in names:
            self._load_error = BackendUnavailableError(
                f"the vllm engine for {self.model!r} died: {exc}"
            )
            return self._load_error
        if isinstance(exc, ValueError) or "VLLMClientError" in names:
            return BadRequestError(f"vllm refused a request for {self.model!r}: {exc}")
        return ServerError(f"vllm failed on {self.model!r}: {exc!r}")

    async def _prompt_ids(self, engine: Any, request: LLMRequest) -> list[int]:
        if self._tokenizer is None:
            tokenizer = engine.get_tokenizer()  # a coroutine up to vLLM 0.12, a plain call since
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        conversation = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            text = self._tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            return list(self._tokenizer.encode(text, add_special_tokens=False))
        except Exception as exc:  # a template that refuses these roles
            raise BadRequestError(f"vllm:{self.model} could not render the chat: {exc}") from exc

    def _tokens_of(self, tokenizer: Any, choice: str) -> list[int]:
        found = self._choice_ids.get(choice)
        if found is None:
            found = list(tokenizer.encode(choice, add_special_tokens=False))
            if not found:
                raise BadRequestError(f"choice {choice!r} has no tokens")
            self._choice_ids[choice] = found
        return found

    # -- loading ----------------------------------------------------------------------------

    def _ready(self) -> Any:
        """The engine, built now (on this loop, which it binds to) if it is not yet."""
        if self._load_error is not None:
            raise self._load_error
        if self._engine is None:
            try:
                self._engine = self._load()
            except LLMError as exc:
                self._load_error = exc
                self._release()
                raise
        return self._engine

    def _load(self) -> Any:
        if self._api is None:
            self._api = load_api()
        self._scoring_rows = "prompt_logprob_start" in _fields(self._api.SamplingParams)
        share = self.gpu_memory_utilization
        with _LOADED_LOCK:
            others = [v for k, v in _LOADED.items() if k != id(self)]
            problem = _split_problem(self.model, share, others)
            if problem:
                raise BackendUnavailableError(problem)
            _LOADED[id(self)] = (self.model, share)
        weakref.finalize(self, _forget, id(self))  # a backend dropped unclosed frees its place
        kwargs = dict(self._engine_kwargs)
        if share is not None:
            kwargs["gpu_memory_utilization"] = share
        try:
            args = self._api.AsyncEngineArgs(model=self.model, **kwargs)
        except TypeError as exc:
            raise BackendUnavailableError(
                f"invalid vllm option for vllm:{self.model}: {sorted(kwargs)}: {exc}"
            ) from exc
        try:
            return self._api.AsyncLLM.from_engine_args(args)
        except Exception as exc:
            hint = f"; {_SPLIT_HINT}" if others or "memory" in str(exc).lower() else ""
            raise BackendUnavailableError(
                f"vllm could not load vllm:{self.model}: {exc}{hint}"
            ) from exc

    def _release(self) -> None:
        _forget(id(self))


def _forget(key: int) -> None:
    with _LOADED_LOCK:
        _LOADED.pop(key, None)
