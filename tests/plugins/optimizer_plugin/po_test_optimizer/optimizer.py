"""``hint_suffix``: proposes the seed's system text with one fixed hint appended, one per step.

It calls no model: an optimizer from outside promptopt that only uses the plugin
contract (``name``, ``Config``, ``propose``, ``observe``, ``estimate_calls``, ``stats``)
and reads its text from a template of its own package (``templates/hints.txt``).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from promptopt.optimizers.base import Evaluated, Proposal, SearchState
from promptopt.optimizers.meta_prompts import template_parts

HINTS = (
    "Answer with one word.",
    "Read the whole review before answering.",
    "Sarcasm means the opposite of the words.",
)


class HintSuffixConfig(BaseModel):
    steps: int = Field(2, ge=1, le=len(HINTS), description="Hints tried, one per step.")


class HintSuffix:
    name: ClassVar[str] = "hint_suffix"
    Config: ClassVar[type[BaseModel]] = HintSuffixConfig

    def __init__(self, config: HintSuffixConfig | None = None) -> None:
        self.config = config or HintSuffixConfig()
        self.stats: dict[str, Any] = {"proposed": 0}

    async def propose(self, state: SearchState, *, llm: Any, rng: random.Random) -> list[Proposal]:
        tried = self.stats["proposed"]
        if tried >= self.config.steps or "system" not in state.seed.params:
            return []
        params = dict(state.seed.params)
        hint = template_parts("hints", package="po_test_optimizer")["hint"]
        params["system"] = hint.substitute(system=params["system"], hint=HINTS[tried]).strip()
        self.stats["proposed"] += 1
        return [Proposal(params=params, parent_id=state.seed.id, meta={"hint": tried})]

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        return None

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        return self.config.steps * n_val
