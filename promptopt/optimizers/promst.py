"""PROMST (Chen et al., EMNLP 2024): feedback rules, per-error summaries, a tree of rewrites,
and a score predictor that decides which rewrites are worth evaluating.

The task's feedback rules (``feedback:`` in task.yaml) tag each failing validation
example with its error type (the engine does it, see
:mod:`promptopt.task.feedback`); failures that match no rule form the ``other``
bucket. Expanding a parent (one step):

1. one optimizer-model **summary call per non-empty bucket** (all at once): the rule's message,
   the parent's prompt and up to ``examples_per_rule`` of its failures of that
   type, answered in plain text;
2. **write calls**, one per child, all at once: the parent's prompt, the summaries and the
   trajectory from the seed to the parent with their scores; the reply is JSON
   ``{"reasoning", "prompt"}``. A rewrite equal to the parent's prompt or to one
   already tried is a no-op (counted in ``stats["noops"]``) and the next request
   changes instead of repeating (see :class:`~promptopt.optimizers.rewriters.JsonRewriter`);
3. the ``n_children`` children are proposed; once the **score predictor** has
   ``predictor_min_pairs`` (text, score) pairs, ``surplus`` more rewrites are
   written and only the ``n_children`` it ranks highest are proposed, so the
   others never cost an evaluation.

After the engine scores them, the ``n_selected`` best children are pushed on a
stack, best on top, so the tree grows depth first. A child is not expanded when
it is deeper than ``min_level`` and the scores along its branch strictly fell
three times in a row (grandparent > parent > child), nor beyond ``max_level``;
the search ends when a candidate makes no error on validation, after
``expansions`` parents, or when the stack is empty. An expansion that brings
no new child (every reply a no-op) still counts, and its parent stays on top.

The predictor (:mod:`promptopt.optimizers.score_predictor`) is refitted after
every step on every validation score seen; ``stats["predictor_mae"]`` is its mean
absolute error on the proposals it ranked, measured when they were scored.

Calls per expansion: one summary per non-empty bucket, ``n_children`` (+
``surplus``) writes (+ one per no-op, up to ``retries``), ``n_children`` x |val|
task calls. The meta-prompts are ``templates/promst.txt``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import BadRequestError
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.answers import answers_rule, mistakes
from promptopt.optimizers.base import (
    Evaluated,
    ExampleResult,
    Proposal,
    SearchState,
    candidate_id,
    config_of,
    gather_all,
)
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.optimizers.replies import reply_schema
from promptopt.optimizers.rewriters import JSON_REWRITE_STATS, JsonRewriter, inputs_text, text_param
from promptopt.optimizers.score_predictor import ScorePredictor
from promptopt.optimizers.shown import clip_text
from promptopt.task.spec import OTHER_RULE

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = ["PROMST", "PromstConfig"]

_OTHER_MESSAGE = "Failures that match none of the declared error types."
_STATS = (*JSON_REWRITE_STATS, "expansions", "summaries", "proposals", "filtered", "pruned",
          "budget_stop")  # fmt: skip


class PromstConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_children: int = Field(
        4, ge=1, description="Children proposed per expanded parent (paper: 8; its examples: 4)."
    )
    n_selected: int = Field(2, ge=1, description="Best children expanded next (paper: 2).")
    min_level: int = Field(
        2, ge=0, description="Depth past which a branch whose scores fell 3 times stops (paper: 2)."
    )
    max_level: int = Field(6, ge=1, description="Deepest level a child may be expanded from.")
    expansions: int = Field(6, ge=1, description="Parents expanded at most.")
    examples_per_rule: int = Field(3, ge=1, description="Failures shown per summary call.")
    param: str | None = Field(
        None, description="The text parameter to rewrite; default: the first of kind 'text'."
    )
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Write-call temperature (children must differ)."
    )
    summary_temperature: float = Field(0.0, ge=0.0, le=2.0, description="Summary temperature.")
    retries: int = Field(1, ge=0, description="Changed re-requests per child after a no-op.")
    predictor: bool = Field(
        True, description="Rank surplus rewrites with the online score predictor."
    )
    surplus: int = Field(
        4, ge=0, description="Extra rewrites written per parent once the predictor is trained."
    )
    predictor_min_pairs: int = Field(
        6, ge=2, description="Scored candidates the predictor needs before it ranks."
    )
    ridge: float = Field(1.0, gt=0, description="The predictor's ridge penalty.")
    max_tokens: int = Field(800, ge=16, description="Longest optimizer-model reply, in tokens.")
    max_prompt_chars: int = Field(2000, ge=100, description="Longest prompt a reply may hold.")
    max_value_chars: int = Field(
        400, ge=40, description="Inputs, outputs and summaries are clipped to this."
    )
    json_schema: bool = Field(True, description="Send the write reply's JSON schema.")


class PROMST:
    """Grow a tree of rewrites from per-error-type summaries of the failures."""

    name: ClassVar[str] = "promst"
    racing: ClassVar[bool] = True  # observe copes with the candidates racing dropped
    Config: ClassVar[type[BaseModel]] = PromstConfig

    def __init__(self, config: PromstConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(PromstConfig, config)
        self.stats: dict[str, Any] = dict.fromkeys(_STATS, 0) | {"predictor_mae": None}
        self.predictor = ScorePredictor(ridge=self.config.ridge)
        self._stack: list[str] | None = None  # candidate ids to expand; the top is last
        self._depth: dict[str, int] = {}
        self._done = False
        self._rewriter: JsonRewriter | None = None
        self._predicted: dict[str, float] = {}
        self._errors: list[float] = []

    # -- the protocol --------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        target = text_param(state, self.config.param, optimizer=self.name)
        if self._rewriter is None:
            self._rewriter = JsonRewriter(target, self.stats, retries=self.config.retries)
        if self._stack is None:
            self._stack, self._depth[state.seed.id] = [state.seed.id], 0
            self._done = any(not _failures(e) for e in state.history)
        by_id = {e.candidate.id: e for e in state.history}
        while self._stack and not self._done and self.stats["expansions"] < self.config.expansions:
            if state.remaining_calls is not None and state.remaining_calls < self._expansion_calls(
                len(state.val)
            ):  # its share cannot pay for one more expansion
                self.stats["budget_stop"] += 1
                break
            parent = by_id[self._stack.pop()]
            self.stats["expansions"] += 1
            children = await self._expand(state, parent, target, llm, by_id)
            if children:
                self.stats["proposals"] += len(children)
                return children
            # every reply was a no-op or unreadable: the parent stays, and its next
            # expansion's requests change (new seeds, the last problem shown)
            self._stack.append(parent.candidate.id)
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Push the best children (unless their branch declines), refit the predictor."""
        for child in results:
            self._depth[child.candidate.id] = self._depth.get(child.parent_id or "", 0) + 1
            if child.candidate.id in self._predicted:
                self._errors.append(abs(self._predicted.pop(child.candidate.id) - child.score))
                self.stats["predictor_mae"] = round(sum(self._errors) / len(self._errors), 4)
        if any(not _failures(child) for child in results):
            self._done = True  # nothing left to learn on validation, and nothing can beat it
        by_id = {e.candidate.id: e for e in state.history}
        # best first; sorted() is stable, so the first proposed wins a tie
        best = sorted(results, key=lambda e: -e.score)[: self.config.n_selected]
        keep = [child for child in best if self._grows(child, by_id)]
        self.stats["pruned"] += len(best) - len(keep)
        if self._stack is not None:
            self._stack.extend(child.candidate.id for child in reversed(keep))
        if self.config.predictor:
            target = text_param(state, self.config.param, optimizer=self.name)
            scored = [e for e in by_id.values() if target in e.candidate.params]
            self.predictor.fit(
                [str(e.candidate.params[target]) for e in scored], [e.score for e in scored]
            )

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls after the seed (an upper bound); the optimizer model's are at most
        ``expansions * (rules + 1 + (n_children + surplus) * (1 + retries))`` more."""
        return self.config.expansions * self.config.n_children * n_val

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each expansion within ``calls``: a summary, then each child's
        optimizer call and its validation rows (retries and more error types not counted)."""
        each = self._expansion_calls(n_val)
        steps = self.config.expansions if calls is None else min(self.config.expansions,
                                                                  calls // each)  # fmt: skip
        return [each] * steps

    def _expansion_calls(self, n_val: int) -> int:
        return 1 + self.config.n_children * (n_val + 1)

    # -- one expansion -----------------------------------------------------

    async def _expand(
        self,
        state: SearchState,
        parent: Evaluated,
        target: str,
        llm: LLM,
        by_id: Mapping[str, Evaluated],
    ) -> list[Proposal]:
        buckets = self.buckets(state, parent)
        summaries = await gather_all(*(  # one per error type, at once
            self._summarize(state, parent, target, rule, failures, llm)
            for rule, failures in buckets.items()
        ))  # fmt: skip
        errors = [
            (rule, len(failures), summary)
            for (rule, failures), summary in zip(buckets.items(), summaries, strict=True)
        ]
        ranking = self.config.predictor and self.predictor.pairs >= self.config.predictor_min_pairs
        wanted = self.config.n_children + (self.config.surplus if ranking else 0)
        trajectory = self._trajectory(parent, target, by_id)
        # the allowed answers, as MCTS, OPRO and GEPA say them: without them Qwen's prompts
        # offered "such as 'positive', 'negative', 'neutral'" on SST-2
        confused = ""
        if state.choices:
            wrong = mistakes(parent.results, who="the prompt", where="the new prompt")
            confused = " ".join(t for t in (answers_rule(state), wrong) if t)
        assert self._rewriter is not None
        depth = self._depth.get(parent.candidate.id, 0) + 1
        answers = await self._rewriter.ask_many(  # the children do not depend on each other
            state,
            llm,
            parent.candidate.params,
            lambda problem, seed: self.write_request(
                target, parent, errors, trajectory, problem, seed=seed, confused=confused
            ),
            count=wanted,
        )
        children = [
            Proposal(params=answer.params, parent_id=parent.candidate.id,
                     meta={"kind": "promst", "depth": depth, "errors": list(buckets)},
                     request_key=answer.key)
            for answer in answers
        ]  # fmt: skip
        if ranking and len(children) > self.config.n_children:
            children = self.rank(children, target)
        return children

    def buckets(self, state: SearchState, parent: Evaluated) -> dict[str, list[ExampleResult]]:
        """The parent's failures by error type: declared rules in order, then ``other``."""
        order = [*state.rules, OTHER_RULE]
        found: dict[str, list[ExampleResult]] = {rule: [] for rule in order}
        for result in _failures(parent):
            found[result.rule if result.rule in found else OTHER_RULE].append(result)
        return {rule: failures for rule, failures in found.items() if failures}

    def rank(self, children: Sequence[Proposal], target: str) -> list[Proposal]:
        """The ``n_children`` children the predictor rates highest (first written wins ties)."""
        predicted = [self.predictor.predict(str(c.params[target])) for c in children]
        order = sorted(range(len(children)), key=lambda i: -predicted[i])
        kept = sorted(order[: self.config.n_children])
        self.stats["filtered"] += len(children) - len(kept)
        out = []
        for i in kept:
            child = children[i]
            self._predicted[candidate_id(child.params)] = predicted[i]
            out.append(Proposal(child.params, child.parent_id,
                                {**child.meta, "predicted": round(predicted[i], 4)}))  # fmt: skip
        return out

    def _grows(self, child: Evaluated, by_id: Mapping[str, Evaluated]) -> bool:
        """False past ``max_level``, or past ``min_level`` when the branch fell three times."""
        depth = self._depth.get(child.candidate.id, 0)
        if depth >= self.config.max_level:
            return False
        parent = by_id.get(child.parent_id or "")
        grand = by_id.get(parent.parent_id or "") if parent else None
        if depth > self.config.min_level and parent is not None and grand is not None:
            return not grand.score > parent.score > child.score
        return True

    # -- requests ----------------------------------------------------------

    async def _summarize(
        self,
        state: SearchState,
        parent: Evaluated,
        target: str,
        rule: str,
        failures: Sequence[ExampleResult],
        llm: LLM,
    ) -> str:
        message = state.rules.get(rule, _OTHER_MESSAGE)
        request = self.summary_request(parent, target, rule, message, failures)
        self.stats["summaries"] += 1
        try:
            reply = (await llm.acomplete(request)).text
        except BadRequestError:
            self.stats["request_errors"] += 1
            reply = ""
        return clip_text(" ".join(reply.split()), self.config.max_value_chars) or message

    def summary_request(
        self,
        parent: Evaluated,
        target: str,
        rule: str,
        message: str,
        failures: Sequence[ExampleResult],
    ) -> LLMRequest:
        """One summary call: the rule, the parent's prompt and a few failures of that type."""
        parts = template_parts("promst")
        limit = self.config.max_value_chars
        shown = "".join(
            parts["failure"].substitute(
                number=number,
                inputs=inputs_text(r.example.inputs, limit),
                output=clip_text(r.output if r.output is not None else f"(none: {r.error})", limit),
                expected="(unknown)" if r.example.target is None else clip_text(
                    str(r.example.target), limit),
                feedback=clip_text(r.score.feedback or "(none)", limit),
            )
            for number, r in enumerate(failures[: self.config.examples_per_rule], 1)
        ).rstrip()  # fmt: skip
        user = parts["summary_user"].substitute(
            rule=rule, message=message, prompt=str(parent.candidate.params.get(target, "")),
            failures=shown,
        )  # fmt: skip
        return optimizer_request(
            parts["summary_system"],
            user,
            temperature=self.config.summary_temperature,
            max_tokens=self.config.max_tokens,
        )

    def write_request(
        self,
        target: str,
        parent: Evaluated,
        errors: Sequence[tuple[str, int, str]],
        trajectory: str,
        problem: str = "",
        *,
        seed: int | None = None,
        confused: str = "",
    ) -> LLMRequest:
        """One write call: the parent's prompt, the error summaries (and ``confused``, the
        allowed answers and the parent's commonest wrong answers:
        :func:`~promptopt.optimizers.answers.mistakes`) and the trajectory."""
        parts = template_parts("promst")
        shown = "".join(
            parts["error"].substitute(rule=rule, count=count, summary=summary)
            for rule, count, summary in errors
        )
        user = parts["write_user"].substitute(
            prompt=str(parent.candidate.params.get(target, "")),
            errors="\n\n".join(t for t in (shown.strip(), confused) if t) or "(none)",
            trajectory=trajectory,
            note=parts["retry"].substitute(problem=problem) if problem else "",
        )
        schema = reply_schema((("reasoning", 500), ("prompt", self.config.max_prompt_chars)))
        return optimizer_request(
            parts["write_system"],
            user,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            # one seed per request sent: every child a new sample
            seed=self.stats["calls"] if seed is None else seed,
            json_schema=schema if self.config.json_schema else "",
        )

    def _trajectory(self, parent: Evaluated, target: str, by_id: Mapping[str, Evaluated]) -> str:
        path = [parent]
        while path[-1].parent_id in by_id and len(path) <= self.config.max_level:
            path.append(by_id[path[-1].parent_id or ""])
        step = template_parts("promst")["step"]
        limit = self.config.max_value_chars
        return "\n".join(
            step.substitute(number=number, score=f"{e.score:.3f}",
                            prompt=clip_text(str(e.candidate.params.get(target, "")), limit))
            for number, e in enumerate(reversed(path), 1)
        ).rstrip()  # fmt: skip


def _failures(evaluated: Evaluated) -> list[ExampleResult]:
    return [r for r in evaluated.results if r.failed]
