"""How optimizers show values and inputs to their model: one line, clipped, stable.

Every optimizer that quotes a value, a text or an example to its model goes
through these, so the same search state always renders the same request: object
addresses (``at 0x7f...``) are removed and long values are clipped saying how
much was cut (:func:`promptopt.text.clip`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptopt.optimizers.base import PROMPT_SHAPE, SearchState
from promptopt.text import MORE_CHARS, clip

__all__ = ["clip_text", "input_fields", "role_of", "show_value"]

# what a prompt program's texts are to its model, said where a request names one: told only
# 'a text named "system"', Qwen2.5-Coder-1.5B read the seed "positive or negative" as a
# review to rewrite (MCTS on SST-2: every version a copy) or a question about the text
_PROMPT_ROLES = {
    "system": "the system message: the instructions the language model reads before every input",
    "user": "the user message: each input is written into it where its field is named",
}

_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


def input_fields(state: SearchState) -> list[str]:
    """The input fields of an example (what an exemplar's inputs must hold)."""
    for example in (*state.train, *state.val):
        return [str(k) for k in example.inputs]
    return []


def clip_text(text: str, limit: int) -> str:
    """``text`` without object addresses, clipped to ``limit`` characters (saying how many more)."""
    return clip(_ADDRESS.sub("", text), limit)


def show_value(value: Any, limit: int) -> str:
    """``value`` as one line of JSON, clipped to about ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        # the cut start as a JSON string, then how much was cut
        shown = json.dumps(_ADDRESS.sub("", value[:limit]), ensure_ascii=False)
        return shown + MORE_CHARS.format(more=len(value) - limit)
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return clip_text(text, limit)


def role_of(state: SearchState, name: str) -> str:
    """`` (what it is)`` for a prompt program's ``system`` and ``user`` texts, to follow their
    name in an optimizer's request; empty for any other parameter."""
    role = _PROMPT_ROLES.get(name) if PROMPT_SHAPE in state.program_description else None
    return f" ({role})" if role else ""
