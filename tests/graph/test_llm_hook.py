"""LLM calls made inside a node attach to it through the client's listener hook."""

from __future__ import annotations

from promptopt.graph import node, record_llm_call, trace
from promptopt.llm.fakes import fake_llm
from promptopt.llm.types import LLMRequest, Message


def _request(text: str) -> LLMRequest:
    return LLMRequest(messages=(Message(role="user", content=text),))


def _llm():
    llm = fake_llm(lambda request: "forty-two")
    llm.add_listener(record_llm_call)
    return llm


async def test_async_calls_attach_to_their_node():
    llm = _llm()

    @node
    async def ask(question):
        return (await llm.acomplete(_request(question))).text

    async with trace() as t:
        await ask("why?")
    (call,) = t.nodes[0].llm_calls
    assert call["text"] == "forty-two" and call["messages"][0]["content"] == "why?"


def test_sync_calls_attach_to_their_node():
    llm = _llm()

    @node
    def ask(question):
        return llm.complete(_request(question)).text

    with trace() as t:
        ask("how?")
    assert [c["text"] for c in t.nodes[0].llm_calls] == ["forty-two"]
    llm.complete(_request("outside"))  # no trace: the listener records nothing, raises nothing
