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

from promptopt.errors import ConfigError

__all__ = ["choices_grammar", "gbnf_literal"]

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
