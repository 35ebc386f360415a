"""The ``openai`` backend: any OpenAI-compatible chat completions endpoint, through the real SDK.

Works with api.openai.com and with local servers (vLLM ``serve``, llama.cpp's
server, Ollama, LM Studio) given their ``base_url``. Several ``base_url``\\ s are
treated as replicas of one deployment: each request goes to the endpoint with
the fewest requests in flight (ties broken round robin). The backend does not
retry, cache or budget; it translates SDK exceptions into :mod:`promptopt.errors`.

A request's ``json_schema`` is sent as ``response_format``: ``{"type":
"json_schema", ...}`` as OpenAI and vLLM take it, or, with
``schema_format="json_object"``, ``{"type": "json_object", "schema": ...}`` as
llama.cpp's Python server takes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import openai

from promptopt.errors import AuthenticationError, ConfigError
from promptopt.llm.backends._grammar import choices_grammar
from promptopt.llm.backends._http import PerLoop, public_url, sdk_clients, translate_sdk_error
from promptopt.llm.models import HTTP_PROVIDERS
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["OpenAIBackend"]

DEFAULT_BASE_URL = HTTP_PROVIDERS["openai"].default_url
# Local servers ignore the key, but the SDK refuses to send a request without one.
_PLACEHOLDER_KEY = HTTP_PROVIDERS["openai"].placeholder_key


@dataclass(slots=True)
class _Endpoint:
    url: str  # public form, safe to show
    clients: PerLoop[openai.AsyncOpenAI]
    in_flight: int = 0


class OpenAIBackend:
    """Chat completions through ``openai.AsyncOpenAI`` against one or several endpoints."""

    provider: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        grammar_choices: bool = False,
        schema_format: Literal["json_schema", "json_object"] = "json_schema",
        **extra_body: Any,
    ) -> None:
        if schema_format not in ("json_schema", "json_object"):
            raise ConfigError(
                f"schema_format must be 'json_schema' or 'json_object', not {schema_format!r}"
            )
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        key = api_key or os.environ.get(api_key_env) or None
        if key is None:
            if not urls:
                raise AuthenticationError(
                    f"no API key for provider 'openai': set {api_key_env!r} or pass api_key="
                )
            key = _PLACEHOLDER_KEY
        self.model = model
        self.timeout = timeout
        self.grammar_choices = grammar_choices
        self.schema_format = schema_format
        self._extra_body = dict(extra_body)
        self._secrets = (key, *(urlsplit(url).password for url in urls))
        self._endpoints = [
            _Endpoint(
                url=public_url(url or DEFAULT_BASE_URL),
                clients=sdk_clients(openai, openai.AsyncOpenAI, key=key, url=url, timeout=timeout),
            )
            for url in (urls or [None])
        ]
        self._next = 0
        self.cache_namespace = "openai:" + ",".join(sorted({e.url for e in self._endpoints}))

    def __repr__(self) -> str:
        urls = [endpoint.url for endpoint in self._endpoints]
        return f"OpenAIBackend(model={self.model!r}, base_url={urls!r})"

    @property
    def endpoints(self) -> list[str]:
        """The public URLs of the endpoints, in the order given."""
        return [endpoint.url for endpoint in self._endpoints]

    def _pick(self) -> _Endpoint:
        """The endpoint with the fewest requests in flight; ties go round robin."""
        count = len(self._endpoints)
        order = [self._endpoints[(self._next + i) % count] for i in range(count)]
        best = min(order, key=lambda endpoint: endpoint.in_flight)
        self._next = (self._endpoints.index(best) + 1) % count
        return best

    def _body(self, request: LLMRequest, *, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if n > 1:
            body["n"] = n
        if request.json_schema:
            schema = json.loads(request.json_schema)
            body["response_format"] = (
                {"type": "json_object", "schema": schema}
                if self.schema_format == "json_object"
                else {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
            )
        extra = dict(self._extra_body)
        if request.choices and self.grammar_choices:
            extra["grammar"] = choices_grammar(request.choices)
        if extra:
            body["extra_body"] = extra
        return body

    async def _call(self, request: LLMRequest, *, n: int) -> Any:
        endpoint = self._pick()
        endpoint.in_flight += 1
        try:
            client = endpoint.clients.get()
            return await client.chat.completions.create(**_sent_as_is(self._body(request, n=n)))
        except openai.OpenAIError as exc:
            raise translate_sdk_error(
                exc, sdk=openai, where=endpoint.url, secrets=self._secrets
            ) from None
        finally:
            endpoint.in_flight -= 1

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        """One chat completion; ``request.n`` completions land in ``response.texts``.

        Servers that answer fewer than ``n`` choices (llama.cpp ignores ``n``) get
        follow-up calls for the rest, their usage summed.
        """
        started = time.perf_counter()
        first = await self._call(request, n=request.n)
        replies = [first]
        texts = _texts(first)
        missing = request.n - len(texts)
        if missing > 0:
            more = await asyncio.gather(*(self._call(request, n=1) for _ in range(missing)))
            replies.extend(more)
            for reply in more:
                texts.extend(_texts(reply)[:1])
        usage = sum((_usage(reply) for reply in replies), Usage())
        return LLMResponse(
            text=texts[0] if texts else "",
            texts=tuple(texts[: max(request.n, 1)]) or ("",),
            usage=usage,
            latency_s=time.perf_counter() - started,
            raw_id=getattr(first, "id", None),
            model=getattr(first, "model", None) or request.model or self.model,
        )

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            client = endpoint.clients.pop_current()
            if client is not None:
                await client.close()


def _sent_as_is(body: dict[str, Any]) -> dict[str, Any]:
    """``create()``'s arguments for sending ``body`` (plain JSON, ``extra_body`` included) unchanged.

    ``create()`` walks each named argument against the SDK's TypedDict unions before
    sending it (for every message, each of their members): a quarter of a call's CPU,
    and a no-op on a body of plain strings, numbers, lists and dicts. So only ``model``
    and an empty ``messages`` are named, and the whole body goes as ``extra_body``,
    whose keys the SDK copies over the named ones: the server gets the same JSON object.
    """
    extra = body.pop("extra_body", None) or {}
    return {"model": body["model"], "messages": [], "extra_body": {**body, **extra}}


def _texts(completion: Any) -> list[str]:
    choices = sorted(completion.choices or [], key=lambda choice: choice.index or 0)
    return [(choice.message.content or "") for choice in choices]


def _usage(completion: Any) -> Usage:
    usage = completion.usage
    if usage is None:
        return Usage()
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
