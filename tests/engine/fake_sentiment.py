"""A fake sentiment model that only answers well when shown exemplars of both labels."""

from __future__ import annotations

from promptopt.llm.types import LLMRequest

WORDS = {
    "positive": ["great", "lovely", "superb", "fine", "good"],
    "negative": ["awful", "bad", "dull", "broken", "poor"],
}


def sentiment_rows(n: int = 60) -> list[dict]:
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = WORDS[label][i % 5]
        rows.append({"text": f"item {i} was {word}", "label": label})
    return rows


def picky_model(request: LLMRequest) -> str:
    """Says 'positive' unless its exemplars show both labels; then it reads the words."""
    shown = {m.content for m in request.messages if m.role == "assistant"}
    if {"positive", "negative"} <= shown:
        text = request.messages[-1].content
        return "negative" if any(w in text for w in WORDS["negative"]) else "positive"
    return "positive"


def picky_wire(body: dict) -> str:
    """:func:`picky_model` reading the OpenAI wire format (for the loopback server's handler)."""
    shown = {m["content"] for m in body["messages"] if m["role"] == "assistant"}
    if {"positive", "negative"} <= shown:
        text = body["messages"][-1]["content"]
        return "negative" if any(w in text for w in WORDS["negative"]) else "positive"
    return "positive"
