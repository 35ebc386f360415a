"""A loopback server speaking Anthropic's Messages API, for tests, with fault injection.

Serves ``POST /v1/messages`` (checking the ``anthropic-version`` and
``x-api-key`` headers the SDK sends) and ``GET /v1/models`` with deterministic answers and the same
:class:`~promptopt.testing.faults.FaultPlan` as the OpenAI server; errors come
in Anthropic's ``{"type": "error", "error": {"type", "message"}}`` shape
(``rate_limit_error`` for 429, ``overloaded_error`` for 529, ``api_error`` for
500). ``base_url`` is the root URL, as the ``anthropic`` SDK expects::

    async with AnthropicTestServer(faults=FaultPlan({"529": 0.2})) as srv:
        backend = AnthropicBackend(model="claude-test", base_url=srv.base_url)

or as a subprocess: ``python -m promptopt.testing.anthropic_server --port 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from promptopt.testing._loopback import LoopbackServer, run_cli

__all__ = ["AnthropicTestServer", "main"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


class AnthropicTestServer(LoopbackServer):
    """Speaks the Messages API; requests carry their ``model``, any name is accepted."""

    name = "anthropic"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._ids = itertools.count()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages), web.get("/v1/models", self._models)]

    def conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        turns = [("system", _text(body["system"]))] if body.get("system") else []
        turns += [
            (str(m.get("role", "")), _text(m.get("content")))
            for m in body.get("messages", [])
            if isinstance(m, dict)
        ]
        return turns

    def authorized(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is None:
            bearer = request.headers.get("Authorization", "")
            key = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        if self.api_key is None:
            return key is not None
        return key == self.api_key

    def error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = _ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if "anthropic-version" not in request.headers:
            return self.error(400, "anthropic-version header is required")
        return await self.serve(request, self._reply)

    async def _models(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "invalid or missing API key")
        model = {"type": "model", "id": "loopback", "display_name": "loopback",
                 "created_at": "2025-01-01T00:00:00Z"}  # fmt: skip
        body = {"data": [model], "has_more": False, "first_id": "loopback", "last_id": "loopback"}
        return web.json_response(body)

    async def _reply(self, body: dict[str, Any]) -> web.Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "messages: must be a non-empty list")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.error(400, "max_tokens: field required (a positive integer)")
        if body.get("stream"):
            return self.error(400, "streaming is not supported by the loopback server")
        stop = list(body.get("stop_sequences") or [])
        answer = await self.answer(body, max_tokens=max_tokens, stop=stop)
        payload = {
            "id": f"msg_loopback_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": answer.text}],
            "model": body.get("model", ""),
            "stop_reason": _STOP_REASONS[answer.finish],
            "stop_sequence": answer.stop_sequence,
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
            },
        }
        return web.json_response(payload)


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(AnthropicTestServer, argv)


if __name__ == "__main__":
    main()
