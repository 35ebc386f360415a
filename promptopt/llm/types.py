"""Typed request and response of the LLM layer.

Every backend takes an :class:`LLMRequest` and returns an :class:`LLMResponse`.
Both are frozen so that a request can be hashed into a cache key
(:meth:`LLMRequest.key`) that is the same in every process and never contains
a secret: credentials live in backends, never in requests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LLMRequest", "LLMResponse", "Message", "Role", "Usage", "messages"]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


def messages(*pairs: tuple[Role, str]) -> tuple[Message, ...]:
    """Build a message tuple from ``(role, content)`` pairs."""
    return tuple(Message(role, content) for role, content in pairs)


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat completion request.

    ``model`` is the model name inside its provider (``gpt-4o-mini``, not
    ``openai:gpt-4o-mini``); the client fills it in when left empty.
    ``choices``, when given, asks the backend to answer with exactly one of
    these strings; backends that can constrain decoding do so, the others
    answer freely and the caller's metric judges the text.
    ``json_schema``, when given (a JSON Schema as JSON text), asks for a reply
    that is one JSON value matching it: llama.cpp (local) and vLLM constrain
    decoding with it, OpenAI-compatible servers get it as ``response_format``;
    other backends answer freely. It joins the cache key only when set.
    ``tag`` says who asked (``task``, ``optimizer``, ``judge``); it is kept in
    the run store but is not part of the cache key.
    """

    messages: tuple[Message, ...]
    model: str = ""
    temperature: float = 0.0
    max_tokens: int | None = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    choices: tuple[str, ...] = ()
    json_schema: str = ""
    tag: str = field(default="task", compare=False)

    def canonical(self) -> dict[str, Any]:
        """The request as plain JSON-able data, the part that decides the answer."""
        data: dict[str, Any] = {
            "messages": [[m.role, m.content] for m in self.messages],
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
            "n": self.n,
            "choices": list(self.choices),
        }
        if self.json_schema:  # only when set, so keys of requests without one never change
            data["json_schema"] = self.json_schema
        return data

    def key(self, *, namespace: str = "") -> str:
        """A stable hex digest of the canonical request (plus a namespace such as the provider)."""
        blob = json.dumps(
            [namespace, self.canonical()], sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @classmethod
    def from_canonical(cls, data: dict[str, Any], *, tag: str = "task") -> LLMRequest:
        return cls(
            messages=tuple(Message(role, content) for role, content in data["messages"]),
            model=data["model"],
            temperature=data["temperature"],
            max_tokens=data["max_tokens"],
            stop=tuple(data["stop"]),
            seed=data["seed"],
            n=data["n"],
            choices=tuple(data.get("choices", ())),
            json_schema=str(data.get("json_schema") or ""),
            tag=tag,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """A backend's answer.

    ``texts`` holds all ``n`` completions, ``text`` the first. ``choice_logprobs``,
    when a backend scored the request's ``choices``, holds each choice's
    log-probability in the order of ``request.choices``. ``cached`` says
    the answer came from the response cache or a replay rather than a backend
    call; ``cost_usd`` is filled by the client from its price table.
    """

    text: str
    usage: Usage = Usage()
    latency_s: float = 0.0
    raw_id: str | None = None
    model: str = ""
    texts: tuple[str, ...] = ()
    cached: bool = False
    cost_usd: float = 0.0
    choice_logprobs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.texts:
            object.__setattr__(self, "texts", (self.text,))

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "texts": list(self.texts),
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "latency_s": self.latency_s,
            "raw_id": self.raw_id,
            "model": self.model,
            "cost_usd": self.cost_usd,
            "choice_logprobs": list(self.choice_logprobs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, cached: bool = False) -> LLMResponse:
        prompt, completion = data.get("usage", [0, 0])
        return cls(
            text=data["text"],
            usage=Usage(prompt, completion),
            latency_s=data.get("latency_s", 0.0),
            raw_id=data.get("raw_id"),
            model=data.get("model", ""),
            texts=tuple(data.get("texts", ())),
            cached=cached,
            cost_usd=data.get("cost_usd", 0.0),
            choice_logprobs=tuple(data.get("choice_logprobs", ())),
        )
