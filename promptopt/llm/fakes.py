"""Fake backends, shipped so that users can test their own tasks without a model.

- :class:`FakeBackend` answers through a handler function (by default it echoes
  the last user message; ``FakeBackend(model="yes")`` always answers ``yes``).
- :class:`ScriptedBackend` answers from a queue filled with :meth:`~ScriptedBackend.enqueue`;
  an exception in the queue is raised for its call, so fault handling can be tested.
- :class:`ReplayBackend` answers from a JSONL recording keyed by the canonical
  request, and records one when given a real backend.

Every fake records the requests it saw in ``.requests``. Usage is counted in
whitespace-separated words, a rough stand-in for tokens so budgets can be tested.
:func:`fake_llm` and :func:`scripted_llm` wrap a fake in a ready :class:`~promptopt.llm.client.LLM`.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from promptopt.errors import ConfigError, UnplannedCallError
from promptopt.llm.base import Backend
from promptopt.llm.client import LLM
from promptopt.llm.types import LLMRequest, LLMResponse, Usage
from promptopt.text import shorten

__all__ = [
    "RECORD_ENV",
    "FakeBackend",
    "ReplayBackend",
    "ScriptedBackend",
    "fake_llm",
    "scripted_llm",
]

RECORD_ENV = "PROMPTOPT_RECORD"

Answer = str | LLMResponse
Handler = Callable[[LLMRequest], Answer | Awaitable[Answer]]
ScriptItem = str | LLMResponse | BaseException | type[BaseException]


def _last_user_message(request: LLMRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def _word_usage(request: LLMRequest, text: str) -> Usage:
    prompt = sum(len(m.content.split()) for m in request.messages)
    return Usage(prompt, len(text.split()))


def _as_response(request: LLMRequest, answer: Answer, *, model: str) -> LLMResponse:
    if isinstance(answer, LLMResponse):
        return answer
    if not isinstance(answer, str):
        raise ConfigError(f"a fake answer must be a str or an LLMResponse, got {answer!r}")
    usage = _word_usage(request, answer)
    if request.n > 1:  # n samples of one answer, as the backend contract asks for
        usage = Usage(usage.prompt_tokens, usage.completion_tokens * request.n)
    return LLMResponse(text=answer, texts=(answer,) * request.n, usage=usage, model=model)


def _describe(request: LLMRequest) -> str:
    return repr(shorten(_last_user_message(request), 80, marker="..."))


class FakeBackend:
    """Answers each request with ``handler(request)`` (a str or an LLMResponse, or an awaitable).

    Without a handler it echoes the last user message when ``model`` is ``echo``,
    and otherwise always answers the text ``model`` itself.
    """

    provider: ClassVar[str] = "fake"

    def __init__(self, handler: Handler | None = None, *, model: str = "echo") -> None:
        self.handler = handler
        self.model = model
        self.requests: list[LLMRequest] = []

    def _default(self, request: LLMRequest) -> str:
        return _last_user_message(request) if self.model == "echo" else self.model

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        answer = self.handler(request) if self.handler is not None else self._default(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return _as_response(request, answer, model=self.model)

    async def aclose(self) -> None:
        return None


class ScriptedBackend:
    """Answers from a queue, one item per call; an exception item is raised instead."""

    provider: ClassVar[str] = "fake"

    def __init__(self, responses: Iterable[ScriptItem] = (), *, model: str = "scripted") -> None:
        self.model = model
        self.requests: list[LLMRequest] = []
        self._queue: deque[ScriptItem] = deque(responses)
        self._lock = threading.Lock()

    def enqueue(self, *items: ScriptItem) -> None:
        """Plan the answers (or exceptions) of the next calls, in order."""
        with self._lock:
            self._queue.extend(items)

    @property
    def pending(self) -> int:
        """Planned answers not used yet."""
        return len(self._queue)

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        with self._lock:
            item = self._queue.popleft() if self._queue else None
        if item is None:
            raise UnplannedCallError(
                f"ScriptedBackend has no planned answer for call #{len(self.requests)} "
                f"(last user message {_describe(request)}); plan one first with "
                f"backend.enqueue('answer') or scripted_llm('answer', ...)"
            )
        if isinstance(item, BaseException) or (
            isinstance(item, type) and issubclass(item, BaseException)
        ):
            raise item
        return _as_response(request, item, model=self.model)

    async def aclose(self) -> None:
        return None


class ReplayBackend:
    """Answers from a JSONL recording of ``{key, request, response}`` lines.

    In ``replay`` mode an unseen request raises UnplannedCallError. In ``record``
    mode (or with ``PROMPTOPT_RECORD=1`` in the environment) every request goes
    to ``inner``, the real backend, and its answer is appended to the file.
    The key is the hash of the canonical request, model name included.
    """

    provider: ClassVar[str] = "replay"

    def __init__(
        self,
        path: Path | str,
        *,
        mode: Literal["replay", "record"] = "replay",
        inner: Backend | None = None,
    ) -> None:
        if mode not in ("replay", "record"):
            raise ConfigError(f"unknown replay mode {mode!r}; use 'replay' or 'record'")
        if os.environ.get(RECORD_ENV) == "1":
            mode = "record"
        if mode == "record" and inner is None:
            raise ConfigError(
                f"recording {str(path)!r} needs a real backend: "
                f"ReplayBackend(path, mode='record', inner=<backend>)"
            )
        self.path = Path(path)
        self.mode = mode
        self.inner = inner
        self.requests: list[LLMRequest] = []
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] | None = None

    @staticmethod
    def key(request: LLMRequest) -> str:
        return request.key()

    def _load(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._answers is None:
                answers: dict[str, dict[str, Any]] = {}
                if self.path.exists():
                    with self.path.open(encoding="utf-8") as lines:
                        for number, line in enumerate(lines, 1):
                            if not line.strip():
                                continue
                            try:
                                entry = json.loads(line)
                                answers[entry["key"]] = entry["response"]
                            except (ValueError, KeyError, TypeError) as exc:
                                raise ConfigError(
                                    f"{str(self.path)!r} line {number}: not a recorded call: {exc}"
                                ) from exc
                self._answers = answers
            return self._answers

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        key = self.key(request)
        answers = self._load()
        if self.mode == "replay":
            if key not in answers:
                raise UnplannedCallError(
                    f"no recorded answer in {str(self.path)!r} for request {key[:12]} (last user "
                    f"message {_describe(request)}); re-record it: run with {RECORD_ENV}=1 or "
                    f"ReplayBackend(path, mode='record', inner=<real backend>)"
                )
            return LLMResponse.from_dict(answers[key])
        assert self.inner is not None
        response = await self.inner.agenerate(request)
        self._append(key, request, response)
        return response

    def _append(self, key: str, request: LLMRequest, response: LLMResponse) -> None:
        entry: dict[str, Any] = {
            "key": key,
            "request": request.canonical(),
            "response": response.to_dict(),
        }
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
            assert self._answers is not None
            self._answers[key] = entry["response"]

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


def fake_llm(handler: Handler | None = None, **llm_kwargs: Any) -> LLM:
    """An LLM over a :class:`FakeBackend`; ``llm_kwargs`` go to :class:`LLM` (model defaults to echo)."""
    model = llm_kwargs.pop("model", "echo")
    provider = llm_kwargs.pop("provider", "fake")
    return LLM(FakeBackend(handler, model=model), provider=provider, model=model, **llm_kwargs)


def scripted_llm(*responses: ScriptItem, **llm_kwargs: Any) -> LLM:
    """An LLM over a :class:`ScriptedBackend` planned with ``responses``."""
    model = llm_kwargs.pop("model", "scripted")
    provider = llm_kwargs.pop("provider", "fake")
    return LLM(
        ScriptedBackend(responses, model=model), provider=provider, model=model, **llm_kwargs
    )
