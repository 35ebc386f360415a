"""The LLM client: the one stack around every backend.

:class:`LLM` wraps a :class:`~promptopt.llm.base.Backend` with everything a
backend should not have to do, in this order for each request:

1. fill in the model name and compute the cache key (hash of the canonical request);
2. answer from the ``replay`` hook (resume of a crashed run) or the response cache;
3. refuse it if the model was found unusable (:mod:`promptopt.llm.health`), else
   reserve the call in the :class:`~promptopt.llm.budget.Budget` (before waiting
   for a concurrency slot, so concurrent requests can never overshoot it);
4. wait for one of ``max_concurrency`` slots, call the backend, and retry
   retryable failures per the :class:`~promptopt.llm.retry.RetryPolicy`;
5. price the answer, settle the reservation, store the answer in the cache,
   update :class:`UsageStats` and tell the listeners (the trace store is one).

Cached and replayed answers cost nothing and count only as cache hits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptopt.aio import LoopThread
from promptopt.errors import ConfigError, LLMError, PromptoptError, RetryableError
from promptopt.llm.base import Backend
from promptopt.llm.budget import Budget, Reservation
from promptopt.llm.cache import ResponseCache
from promptopt.llm.health import Health
from promptopt.llm.pricing import PriceTable
from promptopt.llm.retry import RetryPolicy
from promptopt.llm.types import LLMRequest, LLMResponse, Message

__all__ = ["CallEvent", "LLM", "Listener", "UsageStats"]

logger = logging.getLogger(__name__)

# Upper bounds used to reserve budget before the answer is known.
_CHARS_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 8
_DEFAULT_COMPLETION_TOKENS = 512


@dataclass(frozen=True, slots=True)
class CallEvent:
    """What happened to one logical request; given to every listener.

    ``budgeted`` says whether the client that made it draws on a budget.
    """

    key: str
    provider: str
    model: str
    request: LLMRequest
    response: LLMResponse | None
    error: str | None
    cached: bool
    attempts: int
    started_at: float
    duration_s: float
    budgeted: bool = False


Listener = Callable[[CallEvent], object]  # what a listener returns is ignored


@dataclass
class UsageStats:
    """Running totals of one client. ``calls`` counts backend calls that returned an answer;
    ``busy_s`` the seconds in which at least one backend call was in flight, so tokens
    over ``busy_s`` is the model's speed as this run saw it, however many calls overlapped."""

    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    busy_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def snapshot(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total_tokens": self.total_tokens}


@dataclass
class _Tries:
    """How many times the backend was called for one logical request."""

    count: int = 0


def estimate_tokens(request: LLMRequest) -> int:
    """A generous upper bound on the tokens a request can use, prompt and completion."""
    chars = sum(len(m.content) for m in request.messages)
    prompt = math.ceil(chars / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(request.messages)
    completion = (request.max_tokens or _DEFAULT_COMPLETION_TOKENS) * max(request.n, 1)
    return prompt + completion


class LLM:
    """A model behind cache, budget, concurrency limit, retries and cost accounting."""

    def __init__(
        self,
        backend: Backend,
        *,
        provider: str,
        model: str,
        cache: ResponseCache | None = None,
        budget: Budget | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        listeners: Sequence[Listener] = (),
        replay: Callable[[str], LLMResponse | None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        self.backend = backend
        self.provider = provider
        self.model = model
        self.cache = cache
        self.budget = budget
        self.max_concurrency = max_concurrency
        self.retry = retry if retry is not None else RetryPolicy()
        self.prices = prices if prices is not None else PriceTable()
        self.replay = replay
        self.stats = UsageStats()
        self.health = Health(model=f"{provider}:{model}")
        self._listeners: list[Listener] = list(listeners)
        self._rng = rng if rng is not None else random.Random(0)
        self._stats_lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0
        # One semaphore per event loop: asyncio primitives are bound to the loop they run in.
        self._slots_lock = threading.Lock()
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._sync = LoopThread(name="promptopt-llm-sync")
        weakref.finalize(self, self._sync.close)

    def __repr__(self) -> str:
        return f"LLM({self.provider}:{self.model}, backend={type(self.backend).__name__})"

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _filled(self, request: LLMRequest) -> LLMRequest:
        return request if request.model else dataclasses.replace(request, model=self.model)

    def key(self, request: LLMRequest) -> str:
        """The cache key of ``request`` (its model filled in) under this provider and model."""
        namespace = f"{self.provider}:{self.model}"
        extra = getattr(self.backend, "cache_namespace", None)
        if extra:
            namespace = f"{namespace}|{extra}"
        return self._filled(request).key(namespace=namespace)

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._slots_lock:
            slot = self._slots.get(loop)
            if slot is None:
                slot = self._slots[loop] = asyncio.Semaphore(self.max_concurrency)
            return slot

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request`` from replay, cache or backend; raise a PromptoptError on failure."""
        request = self._filled(request)
        key = self.key(request)
        started_at, t0 = time.time(), time.perf_counter()

        stored = self.replay(key) if self.replay is not None else None
        if stored is None and self.cache is not None:
            stored = self.cache.get(key)
        if stored is not None:
            response = dataclasses.replace(stored, cached=True, cost_usd=0.0)
            with self._stats_lock:
                self.stats.cache_hits += 1
            self._emit(self._event(request, key, started_at, t0, response=response, cached=True))
            return response

        self.health.check()
        reservation = self._reserve(request)
        tries = _Tries()
        try:
            async with self._slot():
                self._busy(+1)
                try:
                    response = await self._call_with_retries(request, tries)
                finally:
                    self._busy(-1)
        except BaseException as exc:
            if reservation is not None:
                reservation.release()
            if isinstance(exc, PromptoptError):
                with self._stats_lock:
                    self.stats.failures += 1
                error = f"{type(exc).__name__}: {exc}"
                self._emit(
                    self._event(request, key, started_at, t0, error=error, attempts=tries.count)
                )
                unusable = self.health.note_failure(exc)
                if unusable is not None:
                    raise unusable from exc
            raise

        cost = self.prices.cost(self.provider, self.model, response.usage)
        response = dataclasses.replace(
            response, cost_usd=cost, cached=False, model=response.model or self.model
        )
        if reservation is not None:
            reservation.commit(response.usage, cost)
        if self.cache is not None:
            try:
                self.cache.set(key, response)
            except Exception:  # a full or broken disk must not lose a paid answer
                logger.warning("could not store call %s in %r", key[:12], self.cache, exc_info=True)
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += response.usage.prompt_tokens
            self.stats.completion_tokens += response.usage.completion_tokens
            self.stats.cost_usd += cost
        self._emit(
            self._event(request, key, started_at, t0, response=response, attempts=tries.count)
        )
        return response

    def _busy(self, change: int) -> None:
        """Count a backend call in (+1) or out (-1); time while any is in flight."""
        with self._stats_lock:
            now = time.perf_counter()
            if self._in_flight == 0:
                self._busy_since = now
            self._in_flight += change
            if self._in_flight == 0:
                self.stats.busy_s += now - self._busy_since

    def _reserve(self, request: LLMRequest) -> Reservation | None:
        if self.budget is None:
            return None
        tokens = estimate_tokens(request)
        price = self.prices.price(self.provider, self.model)
        # Price every estimated token at the dearer of the two rates: an upper bound.
        usd = tokens * max(price.input_per_mtok, price.output_per_mtok) / 1e6 if price else 0.0
        return self.budget.reserve(tokens=tokens, usd=usd)

    async def _call_with_retries(self, request: LLMRequest, tries: _Tries) -> LLMResponse:
        while True:
            self.health.check()  # another request found the model unusable: stop retrying
            tries.count += 1
            attempt = tries.count
            t0 = time.perf_counter()
            try:
                response = await self.backend.agenerate(request)
            except RetryableError as exc:
                if not self.retry.should_retry(exc, attempt=attempt):
                    raise
                with self._stats_lock:
                    self.stats.retries += 1
                wait = self.retry.delay(attempt, exc, self._rng)
                logger.info(
                    "%s:%s attempt %d failed (%s); retrying in %.2fs",
                    self.provider,
                    self.model,
                    attempt,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            except PromptoptError:
                raise
            except Exception as exc:  # an SDK error the backend failed to translate
                raise LLMError(
                    f"backend {type(self.backend).__name__!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(response, LLMResponse):
                raise LLMError(
                    f"backend {type(self.backend).__name__!r} returned "
                    f"{type(response).__name__!r}, not an LLMResponse"
                )
            self.health.note_answer()
            if not response.latency_s:
                response = dataclasses.replace(response, latency_s=time.perf_counter() - t0)
            return response

    def _event(
        self,
        request: LLMRequest,
        key: str,
        started_at: float,
        t0: float,
        *,
        response: LLMResponse | None = None,
        error: str | None = None,
        cached: bool = False,
        attempts: int = 0,
    ) -> CallEvent:
        return CallEvent(
            key=key,
            provider=self.provider,
            model=self.model,
            request=request,
            response=response,
            error=error,
            cached=cached,
            attempts=attempts,
            started_at=started_at,
            duration_s=time.perf_counter() - t0,
            budgeted=self.budget is not None,
        )

    def _emit(self, event: CallEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("LLM listener %r failed on call %s", listener, event.key[:12])

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Synchronous :meth:`acomplete`, for code (or threads) without a running event loop.

        Every synchronous call of one client runs on the same private event loop
        in a background thread, so backends that keep loop-bound connections
        (HTTP pools) work across calls, and calls from several threads share
        the concurrency limit.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._sync.run(self.acomplete(request))
        raise ConfigError(
            "LLM.complete() was called inside a running event loop; "
            "use `await llm.acomplete(request)` there instead"
        )

    @staticmethod
    def build_request(
        prompt: str | Sequence[Message], *, system: str | None = None, **request_fields: Any
    ) -> LLMRequest:
        """An LLMRequest from a user prompt (or messages) plus an optional system message."""
        if isinstance(prompt, str):
            msgs: tuple[Message, ...] = (Message("user", prompt),)
        else:
            msgs = tuple(prompt)
        if system is not None:
            msgs = (Message("system", system), *msgs)
        try:
            return LLMRequest(messages=msgs, **request_fields)
        except TypeError as exc:
            raise ConfigError(f"invalid request fields {sorted(request_fields)!r}: {exc}") from exc

    async def achat(
        self, prompt: str | Sequence[Message], *, system: str | None = None, **request_fields: Any
    ) -> str:
        """Send one prompt and return the answer's text."""
        request = self.build_request(prompt, system=system, **request_fields)
        return (await self.acomplete(request)).text

    def chat(
        self, prompt: str | Sequence[Message], *, system: str | None = None, **request_fields: Any
    ) -> str:
        """Synchronous :meth:`achat`, for code that runs outside an event loop."""
        return self.complete(self.build_request(prompt, system=system, **request_fields)).text

    async def aclose(self) -> None:
        """Close the backend. A shared cache or budget belongs to its creator and stays open."""
        await self.backend.aclose()
        self._sync.close()

    def close(self) -> None:
        """Synchronous :meth:`aclose`; closes the backend on the loop the sync calls used."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._sync.run(self.backend.aclose())
            self._sync.close()
            return
        raise ConfigError(
            "LLM.close() was called inside a running event loop; "
            "use `await llm.aclose()` there instead"
        )

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
