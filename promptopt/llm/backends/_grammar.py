"""GBNF grammars that make llama.cpp answer with exactly one of a set of strings.

llama.cpp (in-process through llama-cpp-python, or its HTTP server's ``grammar``
field) can constrain decoding with a GBNF grammar. :func:`choices_grammar` turns
``request.choices`` into the smallest such grammar: one ``root`` rule whose
alternatives are the choices as string literals. When the grammar is complete
llama.cpp only allows the end-of-sequence token, so the answer is one choice,
byte for byte, with nothing before or after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptopt.errors import ConfigError
from promptopt.llm.types import LLMRequest

__all__ = ["choices_grammar", "gbnf_literal", "grammar_safe", "max_tokens_for"]

# Characters that must be escaped inside a GBNF double-quoted literal.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF double-quoted string literal (escaped, UTF-8 kept as is)."""
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def choices_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the given choices.

    Duplicates are dropped (first one kept); an empty list or an empty choice
    is a :class:`~promptopt.errors.ConfigError`, since no grammar can express it.
    """
    if isinstance(choices, str):
        raise ConfigError(f"choices must be a sequence of strings, not the string {choices!r}")
    unique = list(dict.fromkeys(choices))
    if not unique:
        raise ConfigError("choices must hold at least one string")
    for choice in unique:
        if not isinstance(choice, str) or not choice:
            raise ConfigError(f"each choice must be a non-empty string, got {choice!r}")
    alternatives = " | ".join(gbnf_literal(choice) for choice in unique)
    return f"root ::= {alternatives}\n"


_GRAMMAR_MAX_BOUND = 512
_BOUNDS = ("maxLength", "maxItems")


def grammar_safe(schema: Any) -> Any:
    """``schema`` with length bounds above ``_GRAMMAR_MAX_BOUND`` lowered to it.

    llama.cpp spells ``maxLength: n`` as n nested optional rules, and sampling
    with 1500 of them crashed the process (600 did not). Dropping the bound
    instead would let a small model fill the string until ``max_tokens`` cuts
    the JSON short; a lowered bound keeps the reply readable JSON (a value cut
    at the bound is then judged on its own, e.g. code that does not compile).
    """
    if isinstance(schema, dict):
        return {
            key: min(value, _GRAMMAR_MAX_BOUND)
            if key in _BOUNDS and isinstance(value, int) and not isinstance(value, bool)
            else grammar_safe(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [grammar_safe(item) for item in schema]
    return schema


def max_tokens_for(request: LLMRequest) -> int | None:
    """The request's limit, raised so that a grammar-constrained choice is never cut short.

    Under a choices grammar the answer ends with the choice itself; a limit that
    is too small for the longest choice would cut it into a non-answer
    (``max_tokens=3`` and ``negative`` produced ``neg``). Every token holds at
    least one character, so the longest choice's length is an upper bound.
    """
    if not request.choices:
        return request.max_tokens
    needed = max(len(choice) for choice in request.choices) + 1
    return needed if request.max_tokens is None else max(request.max_tokens, needed)
