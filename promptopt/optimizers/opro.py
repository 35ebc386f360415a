"""OPRO (Yang et al., "Large Language Models as Optimizers", ICLR 2024): a scored-history
baseline, proposing from demonstrations as APE does (Zhou et al., ICLR 2023).

Each step asks the optimizer model ``per_step`` times at once (each request with
its own seed) for a new version of one text parameter. The request shows the
versions of that text scored so far with their validation scores, lowest first
(the best ``history`` of them), and ``exemplars`` training examples drawn at
random with their expected outputs. The new versions replace the text in the
best candidate so far; the engine scores them on validation, and the next step
sees them in the history. With several text parameters, steps take them in turn.

The paper samples 8 instructions a step at temperature 1.0 for up to 200 steps,
showing the 20 best with their scores and 3 exemplars. Here a run has 10 steps
of 4 by default, a baseline at a budget comparable to the other optimizers'. It
sizes its steps to its share of the budget: a step asks for fewer versions when
the calls left cannot score ``per_step`` of them on validation, and the search
ends when they cannot score one.

The meta-prompt lives in ``templates/opro.txt`` (parts ``system``, ``user``,
``entry``, ``example``, ``retry``). A reply with no new version (the current
text, or one scored already) is counted as a no-op and asked again, changed
(see :mod:`~promptopt.optimizers.rewriters`); a step whose replies all were
no-ops proposes nothing and the next step runs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.answers import rules
from promptopt.optimizers.base import (
    Evaluated,
    Proposal,
    SearchState,
    candidate_id,
    config_of,
    gather_all,
)
from promptopt.optimizers.meta_prompts import template_parts
from promptopt.optimizers.rewriters import (
    SEED_RANGE,
    MarkedRewriter,
    RewriteConfig,
    quoted_lines,
    show_example,
    text_targets,
)
from promptopt.optimizers.shown import clip_text, input_fields, role_of

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = ["OPRO", "OPROConfig"]


class OPROConfig(RewriteConfig):
    steps: int = Field(10, ge=1, description="Optimizer steps (paper: up to 200).")
    per_step: int = Field(
        4, ge=1, le=16, description="New versions asked for at once each step (paper: 8)."
    )
    history: int = Field(
        20, ge=1, description="Best scored versions shown, lowest score first (paper: 20)."
    )
    exemplars: int = Field(
        3, ge=0, description="Training examples shown with their expected outputs (paper: 3)."
    )


class OPRO:
    """Propose ``per_step`` new versions of a text per step from the scored history."""

    name: ClassVar[str] = "opro"
    racing: ClassVar[bool] = True  # observe copes with the candidates racing dropped
    Config: ClassVar[type[BaseModel]] = OPROConfig

    def __init__(self, config: OPROConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(OPROConfig, config)
        self.stats: dict[str, int] = {"steps": 0, "proposals": 0, "budget_stop": 0}
        self._parts = template_parts("opro")
        self._rewriter = MarkedRewriter(
            stats=self.stats, retries=self.config.retries, retry=self._parts["retry"]
        )

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        c = self.config
        targets = text_targets(state, c.params, optimizer=self.name)
        base = state.best
        while base is not None and self.stats["steps"] < c.steps:
            count = self._affordable(state.remaining_calls, len(state.val))
            if count == 0:  # not one proposal on the validation rows: the share is spent
                self.stats["budget_stop"] += 1
                break
            name = targets[self.stats["steps"] % len(targets)]
            self.stats["steps"] += 1
            proposals = await self._step(state, base, name, llm, rng, count=count)
            if proposals:
                self.stats["proposals"] += len(proposals)
                return proposals
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Nothing to keep: the scored history is read from the state."""

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls the search can make after the seed is scored (an upper bound);
        the optimizer model's own calls are ``per_step`` a step more (and retries)."""
        return self.config.steps * self.config.per_step * n_val

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each step within ``calls``: a proposal costs its optimizer call and
        its validation rows; a step asks for fewer proposals when the rest cannot pay for
        ``per_step`` (retries of no-op replies not counted)."""
        plan: list[int] = []
        left = calls
        for _ in range(self.config.steps):
            count = self._affordable(left, n_val)
            if count == 0:
                break
            plan.append(count * (n_val + 1))
            left = None if left is None else left - plan[-1]
        return plan

    def _affordable(self, calls: int | None, n_val: int) -> int:
        """Proposals of one step that ``calls`` pay for, at most ``per_step``."""
        per_step = self.config.per_step
        return per_step if calls is None else min(per_step, calls // (n_val + 1))

    async def _step(
        self, state: SearchState, base: Evaluated, name: str, llm: LLM, rng: random.Random,
        *, count: int,
    ) -> list[Proposal]:  # fmt: skip
        c = self.config
        shown = rng.sample(list(state.train), min(c.exemplars, len(state.train)))
        examples = "\n\n".join(
            self._parts["example"].substitute(example=show_example(e, limit=c.max_value_chars))
            .strip()
            for e in shown
        )  # fmt: skip
        history = self._history(state, name)
        user = self._parts["user"].substitute(
            description=state.program_description.strip() or "(not described)",
            name=name,
            role=role_of(state, name),
            history=history,
            examples=examples or "(none)",
            rules=rules(state, base.candidate.params.get(name), base.results, name=name),
        )
        # every line of the request but the versions it shows is a copy: Qwen2.5-Coder-1.5B
        # once answered with the request's own "It uses a text named ..." paragraph
        quoted = quoted_lines(user.replace(history, ""), inputs=[e.inputs for e in shown],
                              current=base.candidate.params.get(name))  # fmt: skip
        messages = (
            Message("system", self._parts["system"].template.strip()),
            Message("user", user.strip()),
        )
        taken = state.evaluated_ids()
        asks = []
        for _ in range(count):  # one rng per request, drawn here: they run concurrently
            branch = random.Random(rng.randrange(SEED_RANGE))
            request = LLMRequest(
                messages=messages,
                temperature=c.temperature,
                max_tokens=c.max_tokens,
                seed=branch.randrange(SEED_RANGE),
                tag="optimizer",
            )
            asks.append(
                self._rewriter.versions(
                    llm, request, name=name, base=base.candidate.params, count=1,
                    taken=taken, fields=input_fields(state), rng=branch, quoted=quoted,
                )
            )  # fmt: skip
        proposals = []
        for values, key in await gather_all(*asks):
            for value in values:
                params = {**base.candidate.params, name: value}
                if candidate_id(params) in taken:  # two requests of this step agreed
                    self.stats["noops"] += 1
                    continue
                taken.add(candidate_id(params))
                proposals.append(
                    Proposal(params=params, parent_id=base.candidate.id,
                             meta={"kind": "opro", "param": name}, request_key=key)
                )  # fmt: skip
        return proposals

    def _history(self, state: SearchState, name: str) -> str:
        """The scored versions of ``name``: each once with its best score, the best
        ``history`` of them, lowest score first."""
        scores: dict[str, float] = {}
        for evaluated in state.history:
            value = evaluated.candidate.params.get(name)
            if isinstance(value, str):
                scores[value] = max(scores.get(value, 0.0), evaluated.score)
        ranked = sorted(scores.items(), key=lambda item: item[1])[-self.config.history :]
        return "\n\n".join(
            self._parts["entry"]
            .substitute(text=clip_text(text, self.config.max_value_chars * 2),
                        score=f"{round(score * 100)}")
            .strip()
            for text, score in ranked
        )  # fmt: skip
