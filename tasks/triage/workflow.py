"""A three-step support-ticket triage workflow: two LLM nodes and one trainable code node.

``run(inputs, llm)`` routes one customer message to billing, shipping, technical or
account:

1. ``topic`` (LLM): is the message about a payment, a delivery, a bug or a profile?
   A fixed question, answer constrained to those four words (``choices``);
2. ``classify`` (LLM): picks one of the four teams, answer constrained to them,
   with the ``instruction`` as system message, the ``exemplars`` as earlier chat
   turns, and the topic as a hint after the message;
3. ``route`` (trainable code): keyword rules that may override the model's team.

What an optimizer may change: the ``instruction`` text, the ``exemplars`` list
and the source code of ``route`` (its parameter is named ``route.code``).
``route`` is self-contained (plain arguments, imports inside, no module names)
because rewritten versions of it run in a sandbox subprocess.
"""

from __future__ import annotations

from typing import Any

from promptopt import node, param
from promptopt.llm.types import LLMRequest, Message

TEAMS = ("billing", "shipping", "technical", "account")

instruction = param(
    "Which team should handle this customer message: billing, shipping, technical or account? "
    "Reply with one word.",
    name="instruction",
    description="the system message of the classify step",
)
exemplars = param(
    [],
    name="exemplars",
    kind="exemplars",
    description="solved messages shown to the classify step as earlier chat turns",
)

TOPIC_QUESTION = "Is this customer message about a payment, a delivery, a bug, or a profile?"
TOPICS = ("payment", "delivery", "bug", "profile")


@node
async def topic(message: str, llm: Any) -> str:
    """What the message is about, one of TOPICS (a plainer question than the team)."""
    request = LLMRequest(
        messages=(Message("system", TOPIC_QUESTION), Message("user", message)),
        max_tokens=4,
        choices=TOPICS,
    )
    return (await llm.acomplete(request)).text


@node
async def classify(
    message: str, topic: str, instruction: str, exemplars: list[dict[str, Any]], llm: Any
) -> str:
    """The team the model picks, one of TEAMS."""
    turns = [Message("system", instruction)]
    for shown in exemplars:
        turns.append(Message("user", shown["inputs"]["message"]))
        turns.append(Message("assistant", shown["output"]))
    hint = f"\n(Topic: {topic})" if topic else ""
    turns.append(Message("user", message + hint))
    request = LLMRequest(messages=tuple(turns), max_tokens=4, choices=TEAMS)
    return (await llm.acomplete(request)).text


@node(trainable=True)
def route(team: str, topic: str, message: str) -> str:
    """The final team: keyword rules that override the model, else the model's team.

    ``team`` is the classify step's answer, ``topic`` the topic step's (payment,
    delivery, bug or profile; these seed rules leave it unused).
    """
    text = message.lower()
    rules = [
        (("refund", "invoice", "charged"), "billing"),
        (("delivery", "package", "courier"), "shipping"),
        (("password", "log in", "login"), "account"),
        (("error", "crash"), "technical"),
    ]
    for words, chosen in rules:
        if any(word in text for word in words):
            return chosen
    return team


async def run(inputs: dict[str, Any], llm: Any) -> str:
    """Route one message (``inputs["message"]``) to a team."""
    message = inputs["message"]
    about = await topic(message, llm)
    team = await classify(message, about, instruction.value, exemplars.value, llm)
    return route(team, about, message)
