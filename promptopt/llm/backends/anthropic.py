"""The ``anthropic`` backend: the Messages API through the real ``anthropic`` SDK.

System messages are joined into the ``system=`` field, ``stop`` becomes
``stop_sequences``, ``max_tokens`` defaults to 1024 (the API requires it), and
``n > 1`` is served by ``n`` concurrent calls whose usage is summed. The backend
does not retry, cache or budget; it translates SDK exceptions into
:mod:`promptopt.errors`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import anthropic

from promptopt.errors import AuthenticationError
from promptopt.llm.backends._http import (
    HttpProvider,
    public_url,
    sdk_clients,
    translate_sdk_error,
)
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["AnthropicBackend"]

# Loopback servers ignore the key, but the SDK refuses to send a request without one.
HTTP = HttpProvider(
    key_env="ANTHROPIC_API_KEY", default_url="https://api.anthropic.com",
    placeholder_key="sk-ant-no-key-needed", models_path="/v1/models", key_header="x-api-key",
    headers=(("anthropic-version", "2023-06-01"),),
)  # fmt: skip
DEFAULT_BASE_URL = HTTP.default_url
DEFAULT_MAX_TOKENS = 1024
_PLACEHOLDER_KEY = HTTP.placeholder_key
# Recent SDKs dropped sampling parameters from messages.create; send temperature where it exists.
_TAKES_TEMPERATURE = (
    "temperature" in inspect.signature(anthropic.resources.AsyncMessages.create).parameters
)


class AnthropicBackend:
    """Messages through ``anthropic.AsyncAnthropic``."""

    provider: ClassVar[str] = "anthropic"
    http: ClassVar[HttpProvider] = HTTP

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        timeout: float = 60.0,
        **extra: Any,
    ) -> None:
        key = api_key or os.environ.get(api_key_env) or None
        if key is None:
            if base_url is None:
                raise AuthenticationError(
                    f"no API key for provider 'anthropic': set {api_key_env!r} or pass api_key="
                )
            key = _PLACEHOLDER_KEY
        self.model = model
        self.timeout = timeout
        self._extra = dict(extra)
        self._secrets = (key, urlsplit(base_url).password if base_url else None)
        self._url = public_url(base_url or DEFAULT_BASE_URL)
        self._clients = sdk_clients(
            anthropic, anthropic.AsyncAnthropic, key=key, url=base_url, timeout=timeout
        )
        self.cache_namespace = f"anthropic:{self._url}"

    def __repr__(self) -> str:
        return f"AnthropicBackend(model={self.model!r}, base_url={self._url!r})"

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if _TAKES_TEMPERATURE:
            params["temperature"] = request.temperature
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        params.update(self._extra)
        return params

    async def _call(self, params: dict[str, Any]) -> Any:
        try:
            return await self._clients.get().messages.create(**params)
        except anthropic.AnthropicError as exc:
            raise translate_sdk_error(
                exc, sdk=anthropic, where=self._url, secrets=self._secrets
            ) from None

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        """One Messages call per completion; ``request.n`` completions land in ``texts``."""
        started = time.perf_counter()
        params = self._params(request)
        replies = await asyncio.gather(*(self._call(params) for _ in range(max(request.n, 1))))
        texts = tuple(_text(reply) for reply in replies)
        usage = sum((_usage(reply) for reply in replies), Usage())
        first = replies[0]
        return LLMResponse(
            text=texts[0],
            texts=texts,
            usage=usage,
            latency_s=time.perf_counter() - started,
            raw_id=getattr(first, "id", None),
            model=getattr(first, "model", None) or params["model"],
        )

    async def aclose(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()


def _text(message: Any) -> str:
    return "".join(getattr(block, "text", "") for block in message.content if block.type == "text")


def _usage(message: Any) -> Usage:
    usage = message.usage
    if usage is None:
        return Usage()
    return Usage(usage.input_tokens or 0, usage.output_tokens or 0)
