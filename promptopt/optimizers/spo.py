"""SPO, self-supervised prompt optimization (Xiang et al., 2025): no labels, a pairwise judge.

Greedy hill climbing on one text parameter. Each round the optimizer model
rewrites the incumbent's prompt, shown what the program must achieve (the
``requirements``, by default the task's description) and the incumbent's
answers on the sample inputs (the validation split: 3 examples in the paper);
the reply is JSON ``{"analysis", "modification", "prompt"}``. The engine runs the
rewrite on the same samples and calls :meth:`SPO.judge`: ``votes`` judge calls
(4), each showing the two answer sets as A and B with the sides drawn at random
per vote, and nothing else: neither prompt, nor which one is new, nor a round
number (the reference code showed both prompts, which can give away the
incumbent). The rewrite becomes the incumbent on a strict majority (2-2 keeps
the incumbent). Labels, if the task has them, are never read here: they only
score the seed and the best on test.

A rewrite equal to the incumbent's prompt, or to a prompt already tried, is a
no-op: it is counted (``stats["noops"]``) and the next request changes (a note
saying what happened, and a new sampling seed), so no request is repeated. So is
a rewrite that no longer names one of the program's ``choices`` that the
incumbent names (``stats["dropped_choices"]``; ``keep_choices: false`` allows it):
label-free, the judge cannot see what an answer the prompt stops offering costs.

Calls per round: 1 optimizer call (plus one per no-op or unreadable reply, up
to ``retries``), |samples| task calls, ``votes`` judge calls. The meta-prompts
are ``templates/spo.txt``.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import ReplyParseError
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.base import (
    Evaluated,
    ExampleResult,
    Proposal,
    SearchState,
    Verdict,
    Vote,
    config_of,
)
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.optimizers.replies import parse_json_reply, reply_schema
from promptopt.optimizers.rewriters import (
    JSON_REWRITE_STATS,
    JsonRewriter,
    inputs_text,
    text_param,
)
from promptopt.optimizers.shown import clip_text

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = ["SPO", "SPOConfig", "read_choice"]

_SIDES = ("A", "B")
_STATS = ("rounds", *JSON_REWRITE_STATS, "proposals", "failed_rounds", "comparisons", "votes",
          "unreadable_votes", "accepted", "budget_stop", "dropped_choices")  # fmt: skip
_CHOICE_WORDS = re.compile(
    r"(?:answer|set|choice|option|winner|choose|better)\W{0,3}([AB])\b", re.I
)


class SPOConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(10, ge=1, description="Rewrite-and-judge rounds (paper: 10).")
    votes: int = Field(4, ge=1, description="Judge calls per comparison (paper: 4).")
    requirements: str = Field(
        "", description="What the program must achieve; default: the task's description."
    )
    param: str | None = Field(
        None, description="The text parameter to rewrite; default: the first of kind 'text'."
    )
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Optimizer-model temperature (reference code: 0.7)."
    )
    judge_temperature: float = Field(
        0.3, ge=0.0, le=2.0, description="Judge temperature (reference code: 0.3)."
    )
    retries: int = Field(
        1, ge=0, description="Changed re-requests in a round after a no-op or unreadable reply."
    )
    max_tokens: int = Field(800, ge=16, description="Longest optimizer-model reply, in tokens.")
    max_prompt_chars: int = Field(2000, ge=100, description="Longest prompt the reply may hold.")
    max_answer_chars: int = Field(
        600, ge=40, description="Inputs and answers are clipped to this in both meta-prompts."
    )
    json_schema: bool = Field(
        True, description="Send the reply's JSON schema, so backends that can constrain to it."
    )
    keep_choices: bool = Field(
        True,
        description="Refuse a rewrite that no longer names one of the program's choices that "
        "the incumbent names (and ask again, saying so). SPO reads no labels, so its judge cannot "
        "see what an answer the prompt stops offering costs: on TREC with Qwen2.5-Coder-1.5B a "
        "rewrite without 'number' won and scored 0.420 against the seed's 0.585.",
    )


class SPO:
    """Propose one rewrite of the incumbent per round; judge it against the incumbent."""

    name: ClassVar[str] = "spo"
    Config: ClassVar[type[BaseModel]] = SPOConfig

    def __init__(self, config: SPOConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(SPOConfig, config)
        self.stats: dict[str, Any] = dict.fromkeys(_STATS, 0)
        self._rewriter: JsonRewriter | None = None

    # -- the protocol --------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        target = text_param(state, self.config.param, optimizer=self.name)
        base = state.best
        if base is None:
            return []
        while self.stats["rounds"] < self.config.rounds:
            if state.remaining_calls is not None and state.remaining_calls < self._round_calls(
                len(state.val)
            ):  # its share cannot pay for one more round
                self.stats["budget_stop"] += 1
                break
            self.stats["rounds"] += 1
            proposal = await self._round(state, base, target, llm)
            if proposal is not None:
                self.stats["proposals"] += 1
                return [proposal]
            self.stats["failed_rounds"] += 1
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Nothing to keep: the incumbent is the engine's (``state.best``)."""

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls after the seed (an upper bound); optimizer and judge calls are
        ``rounds * (1 + retries)`` and ``rounds * votes`` more."""
        return self.config.rounds * n_val

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each round within ``calls``: the rewrite, the challenger on the
        validation rows, the judge's votes (retries not counted)."""
        each = self._round_calls(n_val)
        rounds = self.config.rounds if calls is None else min(self.config.rounds, calls // each)
        return [each] * rounds

    def _round_calls(self, n_val: int) -> int:
        return 1 + n_val + self.config.votes

    async def judge(
        self,
        state: SearchState,
        *,
        incumbent: Evaluated,
        challenger: Evaluated,
        llm: LLM,
        rng: random.Random,
    ) -> Verdict:
        """``votes`` judge calls on the two answer sets, sides drawn at random per vote."""
        self.stats["comparisons"] += 1
        theirs = {str(r.example.id): r for r in challenger.results}
        pairs = [(r, theirs[str(r.example.id)]) for r in incumbent.results
                 if str(r.example.id) in theirs]  # fmt: skip
        swaps = [rng.random() < 0.5 for _ in range(self.config.votes)]
        first = self.stats["votes"]  # every vote of the run is its own request (its seed)
        requests = [
            self.judge_request(state, pairs, swapped=s, vote=first + i) for i, s in enumerate(swaps)
        ]
        replies = await asyncio.gather(*(llm.acomplete(r) for r in requests))
        votes = []
        for index, (swapped, request, reply) in enumerate(
            zip(swaps, requests, replies, strict=True)
        ):
            choice = read_choice(reply.text)
            self.stats["votes"] += 1
            self.stats["unreadable_votes"] += not choice
            votes.append(Vote(index, swapped, choice, clip_text(reply.text, 300), llm.key(request)))
        verdict = Verdict(incumbent.candidate.id, challenger.candidate.id, tuple(votes))
        self.stats["accepted"] += verdict.accepted
        return verdict

    # -- requests ----------------------------------------------------------

    def rewrite_request(
        self, state: SearchState, base: Evaluated, target: str, *, problem: str = "",
        seed: int | None = None,
    ) -> LLMRequest:  # fmt: skip
        """The optimizer-model request: requirements, the incumbent's prompt and answers, and
        why the previous reply was unusable (``problem``), if it was."""
        parts = template_parts("spo")
        limit = self.config.max_answer_chars
        answers = "".join(
            parts["answer"].substitute(
                number=number, inputs=inputs_text(r.example.inputs, limit), answer=_answer(r, limit)
            )
            for number, r in enumerate(base.results, 1)
        ).rstrip()
        note = parts["retry"].substitute(problem=problem) if problem else ""
        user = parts["user"].substitute(
            requirements=self._requirements(state),
            prompt=str(base.candidate.params.get(target, "")),
            answers=answers,
            note=note,
        )
        return optimizer_request(
            parts["system"],
            user,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            # one seed per request sent: the same incumbent asked again is a new sample
            seed=self.stats["calls"] if seed is None else seed,
            json_schema=self._schema() if self.config.json_schema else "",
        )

    def judge_request(
        self,
        state: SearchState,
        pairs: Sequence[tuple[ExampleResult, ExampleResult]],
        *,
        swapped: bool,
        vote: int,
    ) -> LLMRequest:
        """Vote number ``vote`` of the run: the inputs and both answer sets, the challenger's
        as A when ``swapped``."""
        parts = template_parts("spo")
        limit = self.config.max_answer_chars
        samples = "".join(
            parts["judge_sample"].substitute(
                number=number,
                inputs=inputs_text(mine.example.inputs, limit),
                a=_answer(theirs if swapped else mine, limit),
                b=_answer(mine if swapped else theirs, limit),
            )
            for number, (mine, theirs) in enumerate(pairs, 1)
        ).rstrip()
        user = parts["judge_user"].substitute(
            requirements=self._requirements(state), samples=samples
        )
        return optimizer_request(
            parts["judge_system"],
            user,
            temperature=self.config.judge_temperature,
            max_tokens=8,
            seed=vote,  # every vote a distinct request, even for equal answer sets
            choices=_SIDES,
            tag="judge",
        )

    # -- one round ---------------------------------------------------------

    async def _round(
        self, state: SearchState, base: Evaluated, target: str, llm: LLM
    ) -> Proposal | None:
        if self._rewriter is None or self._rewriter.target != target:
            self._rewriter = JsonRewriter(
                target,
                self.stats,
                retries=self.config.retries,
                keep_choices=self.config.keep_choices,
            )
        rewriter = self._rewriter
        answer = await rewriter.ask(
            state,
            llm,
            base.candidate.params,
            lambda problem, seed: self.rewrite_request(
                state, base, target, problem=problem, seed=seed
            ),
        )
        if answer is None:
            return None
        return Proposal(
            params=answer.params,
            parent_id=base.candidate.id,
            meta={"kind": "spo", "round": self.stats["rounds"],
                  "modification": _said(answer.reply)},
            request_key=answer.key,
        )  # fmt: skip

    def _requirements(self, state: SearchState) -> str:
        told = self.config.requirements.strip() or state.program_description.strip()
        return told or "Answer every input correctly, completely and concisely."

    def _schema(self) -> str:
        return reply_schema(
            (("analysis", 500), ("modification", 200), ("prompt", self.config.max_prompt_chars))
        )


def _answer(result: ExampleResult, limit: int) -> str:
    if result.output is None:
        return f"(no answer: {clip_text(result.error or 'the program failed', limit)})"
    return clip_text(result.output, limit)


def _said(reply: str) -> str:
    """The one-sentence modification a (readable) rewrite reply states."""
    try:
        said = parse_json_reply(reply).get("modification", "")
    except ReplyParseError:
        return ""
    return clip_text(str(said), 300) if said else ""


def read_choice(reply: str) -> str:
    """``A`` or ``B`` from a judge's reply, or ``""`` when it names neither clearly."""
    text = reply.strip().strip("*_`'\".:()[]<> \n")
    if text.upper() in _SIDES:
        return text.upper()
    first = re.match(r"([AB])\b", text)
    if first:
        return first.group(1)
    named = {m.group(1).upper() for m in _CHOICE_WORDS.finditer(reply)}
    return named.pop() if len(named) == 1 else ""
