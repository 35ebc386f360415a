"""The openai backend's HTTP transport: the headers, proxy and body the SDK sent, and odd answers."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
from typing import Any

import pytest
from aiohttp import web

from promptopt.errors import LLMError
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.types import LLMRequest, messages
from promptopt.testing.openai_server import OpenAITestServer


def ask(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(messages=messages(("user", text)), **fields)


class RecordingServer(OpenAITestServer):
    """Keeps the headers and the request line's URL of every request it answers."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.requests: list[tuple[str, dict[str, str]]] = []

    def authorized(self, request: web.Request) -> bool:
        self.requests.append((str(request.url), dict(request.headers)))
        return super().authorized(request)


async def test_headers_name_promptopt_and_carry_the_key_and_the_sdk_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-2")
    async with RecordingServer(api_key="sk-k") as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url + "/", api_key="sk-k")
        assert (await backend.agenerate(ask("hi"))).text == "hi"
        await backend.aclose()
    url, headers = server.requests[0]
    assert url.endswith("/v1/chat/completions")
    assert headers["Authorization"] == "Bearer sk-k"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("promptopt/")
    assert (headers["OpenAI-Organization"], headers["OpenAI-Project"]) == ("org-1", "proj-2")


async def test_credentials_in_the_url_go_as_basic_auth() -> None:
    """As the SDK's httpx client sent them: in place of the bearer key."""
    async with RecordingServer() as server:
        url = server.base_url.replace("http://", "http://user:p%40ss@")
        backend = OpenAIBackend(model="m", base_url=url, api_key="sk-k")
        await backend.agenerate(ask("hi"))
        await backend.aclose()
    _, headers = server.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


async def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with RecordingServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.root_url)
        backend = OpenAIBackend(model="m", base_url="http://llm.invalid/v1")
        assert (await backend.agenerate(ask("through the proxy"))).text == "through the proxy"
        await backend.aclose()
    assert proxy.requests[0][0] == "http://llm.invalid/v1/chat/completions"


async def test_extra_fields_win_over_the_request_s() -> None:
    """The SDK copied ``extra_body`` over the named fields; so does the backend."""
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return "ok"

    async with OpenAITestServer(handler=handler) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_tokens=3)
        await backend.agenerate(ask("hi", max_tokens=7))
        await backend.aclose()
    assert seen[0]["max_tokens"] == 3 and "extra_body" not in seen[0]


@pytest.mark.parametrize("answer", [b"<html>busy</html>", b"[1, 2]"])
async def test_an_answer_that_is_no_completion_is_an_llm_error(
    answer: bytes, chat_endpoint: Any
) -> None:
    async def odd(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    url = await chat_endpoint(odd)
    backend = OpenAIBackend(model="m", base_url=url)
    with pytest.raises(LLMError) as caught:
        await backend.agenerate(ask("x"))
    await backend.aclose()
    assert type(caught.value) is LLMError
    assert caught.value.endpoint == url


def test_a_session_closes_with_its_loop(caplog: pytest.LogCaptureFixture) -> None:
    """Code that runs each call in its own ``asyncio.run`` and never closes the backend
    leaves no open session behind to log "Unclosed client session" when collected."""
    with OpenAITestServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for text in ("one", "two"):
                assert asyncio.run(backend.agenerate(ask(text))).text == text
            del backend
            gc.collect()
    assert "Unclosed" not in caplog.text
