"""The ``vllm`` backend: an in-process ``vllm.LLM`` fed with batches.

vLLM is fastest when it sees many prompts at once, while the rest of promptopt
sends one request per ``agenerate`` call, concurrently. :class:`VLLMBackend`
bridges the two: calls that arrive within ``batch_window_s`` of the oldest
waiting call (or until ``max_batch`` are waiting) become ONE
``engine.chat(conversations, sampling_params_list)`` call, run in a worker
thread so the event loop stays free; each caller then gets its own output.
One batch runs at a time; calls that arrive meanwhile form the next batch.

The engine is built lazily on the first batch (``vllm.LLM(model=..., **engine_kwargs)``)
unless one is injected; tests inject a fake engine and a fake sampling-params
factory, since vLLM needs a GPU and cannot be installed on CPU machines.
``request.choices`` become vLLM's structured outputs
(``StructuredOutputsParams(choice=...)`` in vLLM >= 0.10.2, ``GuidedDecodingParams``
before); a vLLM with neither answers freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from promptopt import aio
from promptopt.errors import (
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    LLMError,
    ServerError,
)
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["SamplingParamsFactory", "VLLMBackend", "vllm_sampling_params"]

SamplingParamsFactory = Callable[..., Any]
"""Called as ``factory(temperature=, max_tokens=, stop=, seed=, n=, choices=)``; returns
whatever the engine takes as one prompt's sampling parameters."""

_INSTALL_HINT = "pip install 'promptopt[vllm]' (vLLM needs a CUDA GPU)"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the 'vllm' backend needs the 'vllm' package, which is not installed: {_INSTALL_HINT}"
        ) from exc
    return vllm


def vllm_sampling_params(
    *,
    temperature: float,
    max_tokens: int | None,
    stop: Sequence[str],
    seed: int | None,
    n: int,
    choices: Sequence[str],
    json_schema: str = "",
) -> Any:
    """The real factory: a ``vllm.SamplingParams``, with choice- or schema-constrained decoding."""
    sampling = _import_vllm().sampling_params
    kwargs: dict[str, Any] = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stop": list(stop) or None,
        "seed": seed,
        "n": n,
    }
    guide: dict[str, Any] = (
        {"choice": list(choices)} if choices else {"json": json_schema} if json_schema else {}
    )
    if guide:
        if hasattr(sampling, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = sampling.StructuredOutputsParams(**guide)
        elif hasattr(sampling, "GuidedDecodingParams"):
            kwargs["guided_decoding"] = sampling.GuidedDecodingParams(**guide)
    return sampling.SamplingParams(**kwargs)


@dataclass(slots=True)
class _Pending:
    request: LLMRequest
    future: asyncio.Future[LLMResponse]
    enqueued: float = field(default_factory=time.perf_counter)


class _Batcher:
    """Collects one event loop's pending calls and drains them batch by batch."""

    def __init__(self, backend: VLLMBackend) -> None:
        self._backend = backend
        self._pending: list[_Pending] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: LLMRequest) -> LLMResponse:
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future())
        self._pending.append(pending)
        if len(self._pending) >= self._backend.max_batch:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await pending.future

    def fail_all(self, error: LLMError) -> None:
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()

    async def _drain(self) -> None:
        backend = self._backend
        while self._pending:
            if len(self._pending) < backend.max_batch:
                deadline = self._pending[0].enqueued + backend.batch_window_s
                wait = deadline - time.perf_counter()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), wait)
            self._full.clear()
            batch = self._pending[: backend.max_batch]
            del self._pending[: backend.max_batch]
            batch = [p for p in batch if not p.future.done()]
            if batch:
                await backend._run(batch)


class VLLMBackend:
    """Runs requests on an in-process ``vllm.LLM``, batching concurrent calls.

    ``engine`` replaces the ``vllm.LLM`` (anything with vLLM's
    ``chat(conversations, sampling_params, use_tqdm=False)`` shape);
    ``sampling_params`` replaces :func:`vllm_sampling_params`; every other
    keyword goes to ``vllm.LLM`` (``dtype``, ``gpu_memory_utilization``, ``seed`` ...).
    """

    provider: ClassVar[str] = "vllm"

    def __init__(
        self,
        *,
        model: str,
        engine: Any | None = None,
        max_batch: int = 64,
        batch_window_s: float = 0.005,
        sampling_params: SamplingParamsFactory | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch!r}")
        if batch_window_s < 0:
            raise ConfigError(f"batch_window_s must not be negative, got {batch_window_s!r}")
        self.model = model
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self._engine = engine
        self._owns_engine = engine is None
        self._engine_kwargs = engine_kwargs
        self._make_params = sampling_params or vllm_sampling_params
        self._engine_lock = threading.Lock()  # vllm.LLM is not thread-safe
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        if self._closed:
            raise LLMError(f"the vllm backend for {self.model!r} is closed")
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _Batcher(self)
        return await batcher.submit(request)

    async def aclose(self) -> None:
        self._closed = True
        for batcher in list(self._batchers.values()):
            batcher.fail_all(LLMError(f"the vllm backend for {self.model!r} was closed"))
        self._batchers.clear()
        if self._owns_engine:
            self._engine = None

    # -- one batch -------------------------------------------------------------------------

    async def _run(self, batch: list[_Pending]) -> None:
        """Send ``batch`` as one engine call and settle every caller's future."""
        if self._engine is None:
            try:
                await aio.in_thread(self._ensure_engine)
            except LLMError as exc:
                for pending in batch:
                    _settle(pending, error=exc)
                return
        try:
            outputs = await aio.in_thread(self._chat, [p.request for p in batch])
        except BadRequestError as exc:
            if len(batch) == 1:
                _settle(batch[0], error=exc)
                return
            # One bad request fails vLLM's whole batch: retry one by one to isolate it.
            for pending in batch:
                await self._run([pending])
            return
        except LLMError as exc:
            for pending in batch:
                _settle(pending, error=exc)
            return
        for pending, output in zip(batch, outputs, strict=True):
            try:
                response = self._response(output, pending)
            except LLMError as exc:
                _settle(pending, error=exc)
            else:
                _settle(pending, response=response)

    def _chat(self, requests: list[LLMRequest]) -> list[Any]:
        """Worker thread: build the engine if needed and run one ``chat`` call."""
        conversations = [
            [{"role": m.role, "content": m.content} for m in request.messages]
            for request in requests
        ]
        engine = self._ensure_engine()
        with self._engine_lock:
            try:
                params = [self._params(request) for request in requests]
                outputs = list(engine.chat(conversations, params, use_tqdm=False))
            except ValueError as exc:  # vLLM's validation: prompt too long, bad parameter
                raise BadRequestError(f"vllm refused a request for {self.model!r}: {exc}") from exc
            except (TypeError, AttributeError) as exc:  # an engine of another API shape
                raise LLMError(
                    f"vllm engine for {self.model!r} did not take the call: {exc!r}"
                ) from exc
            except Exception as exc:  # CUDA OOM, engine death: the engine's own failure
                raise ServerError(f"vllm failed on {self.model!r}: {exc!r}") from exc
        if len(outputs) != len(requests):
            raise LLMError(
                f"vllm returned {len(outputs)} outputs for {len(requests)} prompts of {self.model!r}"
            )
        return outputs

    def _ensure_engine(self) -> Any:
        with self._engine_lock:
            if self._engine is None:
                vllm = _import_vllm()
                try:
                    self._engine = vllm.LLM(model=self.model, **self._engine_kwargs)
                except Exception as exc:
                    raise BadRequestError(
                        f"vllm could not load model {self.model!r}: {exc!r}"
                    ) from exc
            return self._engine

    def _params(self, request: LLMRequest) -> Any:
        schema = {"json_schema": request.json_schema} if request.json_schema else {}
        return self._make_params(
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=request.stop,
            seed=request.seed,
            n=request.n,
            choices=request.choices,
            **schema,
        )

    def _response(self, output: Any, pending: _Pending) -> LLMResponse:
        completions = list(getattr(output, "outputs", None) or ())
        if not completions:
            raise LLMError(f"vllm returned no completion for a request to {self.model!r}")
        texts = tuple(str(c.text) for c in completions)
        prompt_tokens = len(getattr(output, "prompt_token_ids", None) or ())
        completion_tokens = sum(len(getattr(c, "token_ids", None) or ()) for c in completions)
        request_id = getattr(output, "request_id", None)
        return LLMResponse(
            text=texts[0],
            texts=texts,
            usage=Usage(prompt_tokens, completion_tokens),
            latency_s=time.perf_counter() - pending.enqueued,
            raw_id=None if request_id is None else str(request_id),
            model=self.model,
        )


def _settle(
    pending: _Pending, *, response: LLMResponse | None = None, error: LLMError | None = None
) -> None:
    if pending.future.done():  # the caller was cancelled
        return
    if response is not None:
        pending.future.set_result(response)
    else:
        pending.future.set_exception(error or LLMError("vllm settled a request with nothing"))
