"""A loopback OpenAI-compatible server for tests and benchmarks, with fault injection.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` (both checking the
key when the server has one) with deterministic answers (see
:class:`~promptopt.testing._loopback.LoopbackServer`), plus ``GET /_stats``. Use it in-process::

    async with OpenAITestServer(latency=0.2, faults=FaultPlan({"429": 0.1})) as srv:
        backend = OpenAIBackend(model="echo", base_url=srv.base_url)

in a thread (``with OpenAITestServer() as srv:``), or as a subprocess whose
first stdout line is the base URL::

    python -m promptopt.testing.openai_server --port 0 --latency 0.2 \\
        --faults 429=0.1,500=0.1,timeout=0.05,drop=0.05 --seed 0
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from promptopt.testing._loopback import LoopbackServer, run_cli

__all__ = ["OpenAITestServer", "main"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length"}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class OpenAITestServer(LoopbackServer):
    """Speaks the OpenAI chat completions API; ``model`` is what ``/v1/models`` lists."""

    name = "openai"

    def __init__(self, *, model: str = "loopback", **options: Any) -> None:
        super().__init__(**options)
        self.model = model
        self._ids = itertools.count()

    def api_root(self) -> str:
        return f"{self.root_url}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
        ]

    def conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (str(m.get("role", "")), _content_text(m.get("content")))
            for m in body.get("messages", [])
            if isinstance(m, dict)
        ]

    def authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        return web.json_response(body, status=status, headers=headers)

    async def _models(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "invalid or missing API key")
        data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "promptopt"}]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._complete)

    async def _complete(self, body: dict[str, Any]) -> web.Response:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(400, "'messages' must be a non-empty list")
        if body.get("stream"):
            return self.error(400, "streaming is not supported by the loopback server")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        n = int(body.get("n") or 1)
        answer = await self.answer(body, max_tokens=max_tokens, stop=stop)
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": _FINISH[answer.finish],
                "logprobs": None,
            }
            for index in range(n)
        ]
        completion_tokens = answer.completion_tokens * n
        payload = {
            "id": f"chatcmpl-loopback-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": answer.prompt_tokens + completion_tokens,
            },
        }
        return web.json_response(payload)


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(OpenAITestServer, argv)


if __name__ == "__main__":
    main()
