"""The ``openai`` backend: any OpenAI-compatible chat completions endpoint, over plain HTTP.

Works with api.openai.com and with local servers (vLLM ``serve``, llama.cpp's
server, Ollama, LM Studio) given their ``base_url``. Several ``base_url``\\ s are
treated as replicas of one deployment: each request goes to the endpoint with
the fewest requests in flight (ties broken round robin). The backend does not
retry, cache or budget; failures arrive as :mod:`promptopt.errors`.

Requests go through :class:`~promptopt.llm.backends._transport.JsonTransport` (aiohttp),
not ``openai.AsyncOpenAI``: the SDK cost 4-5 ms of CPU a call, ten times the transport's.
The body is the JSON the SDK sent; its answer is read as the JSON it is. What the SDK
took from the environment still counts: ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID`` as
headers, the proxy variables, ``SSL_CERT_FILE``; credentials in a ``base_url`` go as
HTTP basic auth in place of the key, as the SDK's httpx client sent them.

A request's ``json_schema`` is sent as ``response_format``: ``{"type":
"json_schema", ...}`` as OpenAI and vLLM take it, or, with
``schema_format="json_object"``, ``{"type": "json_object", "schema": ...}`` as
llama.cpp's Python server takes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from promptopt.errors import AuthenticationError, ConfigError, LLMError
from promptopt.llm.backends._grammar import choices_grammar
from promptopt.llm.backends._http import HttpProvider, public_url
from promptopt.llm.backends._transport import JsonTransport
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["OpenAIBackend"]

# Local servers ignore the key; one goes out all the same, as the SDK sent one.
HTTP = HttpProvider(
    key_env="OPENAI_API_KEY", default_url="https://api.openai.com/v1",
    placeholder_key="sk-no-key-needed", models_path="/models", key_header="Authorization",
    key_prefix="Bearer ",
)  # fmt: skip
DEFAULT_BASE_URL = HTTP.default_url
_PLACEHOLDER_KEY = HTTP.placeholder_key
# Environment variable -> header, as ``openai.AsyncOpenAI`` sends them.
_ENV_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


@dataclass(slots=True)
class _Endpoint:
    url: str  # public form, safe to show
    transport: JsonTransport
    in_flight: int = 0


class OpenAIBackend:
    """Chat completions against one or several OpenAI-compatible endpoints."""

    provider: ClassVar[str] = "openai"
    http: ClassVar[HttpProvider] = HTTP

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
            _Endpoint(url=public_url(url), transport=self._transport(url, key=key))
            for url in [url or DEFAULT_BASE_URL for url in urls] or [DEFAULT_BASE_URL]
        ]
        self._next = 0
        self.cache_namespace = "openai:" + ",".join(sorted({e.url for e in self._endpoints}))

    def __repr__(self) -> str:
        urls = [endpoint.url for endpoint in self._endpoints]
        return f"OpenAIBackend(model={self.model!r}, base_url={urls!r})"

    def _transport(self, url: str, *, key: str) -> JsonTransport:
        parts = urlsplit(url)
        headers = {"Authorization": _authorization(key, parts.username, parts.password)}
        for variable, header in _ENV_HEADERS.items():
            if value := os.environ.get(variable):
                headers[header] = value
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path.rstrip("/") + "/chat/completions"
        return JsonTransport(
            urlunsplit((parts.scheme, netloc, path, parts.query, "")),
            headers=headers,
            timeout=self.timeout,
            where=public_url(url),
            secrets=(*self._secrets, headers["Authorization"].partition(" ")[2]),
        )

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
        body.update(extra)  # extra fields win over the named ones, as the SDK's extra_body did
        return body

    async def _call(self, request: LLMRequest, *, n: int) -> dict[str, Any]:
        endpoint = self._pick()
        endpoint.in_flight += 1
        try:
            completion = await endpoint.transport.post(self._body(request, n=n))
        finally:
            endpoint.in_flight -= 1
        if not isinstance(completion, dict):
            error = LLMError(
                f"{endpoint.url!r} answered a {type(completion).__name__}, not a completion"
            )
            error.endpoint = endpoint.url
            raise error
        return completion

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
            raw_id=first.get("id"),
            model=first.get("model") or request.model or self.model,
        )

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.transport.aclose()


def _authorization(key: str, username: str | None, password: str | None) -> str:
    """The ``Authorization`` header: the key as a bearer token, or, for a URL with credentials,
    those as basic auth (httpx put them in place of the SDK's bearer token)."""
    if username is None and password is None:
        return f"Bearer {key}"
    pair = f"{unquote(username or '')}:{unquote(password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _texts(completion: dict[str, Any]) -> list[str]:
    choices = sorted(completion.get("choices") or [], key=lambda choice: choice.get("index") or 0)
    return [((choice.get("message") or {}).get("content") or "") for choice in choices]


def _usage(completion: dict[str, Any]) -> Usage:
    usage = completion.get("usage")
    if not usage:
        return Usage()
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
