"""``LLMRequest.json_schema``: replies constrained to a JSON schema, where a backend can."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promptopt.llm.backends.local import LocalBackend
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.types import LLMRequest, messages
from promptopt.testing.llamacpp import LlamaCppServer
from promptopt.testing.openai_server import OpenAITestServer

SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 120},
        "suggestion": {
            "type": "object",
            "properties": {"instruction": {"type": "string", "minLength": 1, "maxLength": 160}},
            "required": ["instruction"],
            "additionalProperties": False,
        },
    },
    "required": ["reasoning", "suggestion"],
    "additionalProperties": False,
}
ASK = messages(
    ("system", "You improve prompts. Reply with JSON only."),
    ("user", "The instruction 'Classify it.' routes support tickets badly. Suggest a better one."),
)


def request(**fields: Any) -> LLMRequest:
    return LLMRequest(messages=ASK, **{"max_tokens": 200, **fields})


def test_the_schema_joins_the_cache_key_only_when_set() -> None:
    plain = request()
    assert "json_schema" not in plain.canonical()
    constrained = request(json_schema=json.dumps(SCHEMA))
    assert constrained.key() != plain.key()
    again = LLMRequest.from_canonical(constrained.canonical())
    assert again == constrained and again.key() == constrained.key()


async def test_openai_backend_sends_the_schema_as_response_format() -> None:
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return '{"reasoning": "", "suggestion": {"instruction": "x"}}'

    async with OpenAICompatible(handler) as backend:
        await backend.agenerate(request(json_schema=json.dumps(SCHEMA)))
        await backend.agenerate(request())
    assert seen[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA},
    }
    assert "response_format" not in seen[1]


async def test_json_object_format_for_llamacpp_servers() -> None:
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return "{}"

    async with OpenAICompatible(handler, schema_format="json_object") as backend:
        await backend.agenerate(request(json_schema=json.dumps(SCHEMA)))
    assert seen[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}


class OpenAICompatible:
    """An OpenAIBackend against a loopback server answering with ``handler``."""

    def __init__(self, handler: Any, **options: Any) -> None:
        self._server = OpenAITestServer(handler=handler)
        self._options = options

    async def __aenter__(self) -> OpenAIBackend:
        await self._server.__aenter__()
        self._backend = OpenAIBackend(model="m", base_url=self._server.base_url, **self._options)
        return self._backend

    async def __aexit__(self, *exc: Any) -> None:
        await self._backend.aclose()
        await self._server.__aexit__(*exc)


def assert_matches(text: str) -> None:
    reply = json.loads(text)
    assert set(reply) == {"reasoning", "suggestion"}
    assert len(reply["reasoning"]) <= 120
    assert set(reply["suggestion"]) == {"instruction"}
    assert 1 <= len(reply["suggestion"]["instruction"]) <= 160


@pytest.mark.real
async def test_local_smollm2_replies_with_json_of_the_schema() -> None:
    backend = LocalBackend()
    try:
        for temperature in (0.0, 0.9):
            response = await backend.agenerate(
                request(json_schema=json.dumps(SCHEMA), temperature=temperature, seed=1)
            )
            assert_matches(response.text)
    finally:
        await backend.aclose()


@pytest.mark.real
async def test_llamacpp_server_constrains_through_response_format(
    llamacpp_server: LlamaCppServer,
) -> None:
    backend = OpenAIBackend(
        model=llamacpp_server.model,
        base_url=llamacpp_server.base_url,
        schema_format="json_object",  # how llama.cpp's Python server takes a schema
        timeout=240.0,  # only guards a hang: at load 11 on two cores this reply took over 60 s
    )
    try:
        response = await backend.agenerate(request(json_schema=json.dumps(SCHEMA)))
    finally:
        await backend.aclose()
    assert_matches(response.text)


def test_long_bounds_are_lowered_before_llamacpp_sees_them() -> None:
    from promptopt.llm.backends._grammar import grammar_safe as _grammar_safe

    schema = {"type": "object", "properties": {
        "code": {"type": "string", "maxLength": 1500, "minLength": 1},
        "short": {"type": "string", "maxLength": 80},
        "items": {"type": "array", "maxItems": 9000, "items": {"type": "string"}},
    }}  # fmt: skip
    safe = _grammar_safe(schema)["properties"]
    assert safe["code"] == {"type": "string", "maxLength": 512, "minLength": 1}
    assert safe["short"] == {"type": "string", "maxLength": 80}
    assert safe["items"]["maxItems"] == 512


@pytest.mark.real
async def test_local_smollm2_survives_a_long_string_bound() -> None:
    """llama.cpp crashed the process sampling under ``maxLength: 1500``; the bound is lowered
    to 512, and the reply is JSON of the schema with that bound.

    At temperature 0 SmolLM2 closes the JSON after about 60 tokens; ``max_tokens`` leaves
    room for several times that, so a reply cut short would be a real change, not noise.
    """
    long = json.loads(json.dumps(SCHEMA))
    long["properties"]["suggestion"]["properties"]["instruction"]["maxLength"] = 1500
    backend = LocalBackend()
    try:
        response = await backend.agenerate(request(json_schema=json.dumps(long), max_tokens=400))
    finally:
        await backend.aclose()
    assert response.usage.completion_tokens < 400, "the grammar did not close the JSON"
    reply = json.loads(response.text)
    assert set(reply) == {"reasoning", "suggestion"}
    assert isinstance(reply["reasoning"], str) and len(reply["reasoning"]) <= 120
    assert set(reply["suggestion"]) == {"instruction"}
    assert 1 <= len(reply["suggestion"]["instruction"]) <= 512
