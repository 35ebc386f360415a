"""OptoPrime (Trace/OPTO, Cheng et al., NeurIPS 2024): one optimizer-model call per step
over the traced computation, editing every kind of parameter (text, exemplars, code).

Each step takes the best candidate so far, picks a few of its failing validation
examples (with the injected ``rng``), and shows the optimizer model the joint
subgraph of each example's trace (:func:`~promptopt.graph.backward.joint_subgraph`):
the code once, then per example its inputs, intermediate values, output and
feedback. A result without a trace (a prompt program, an old result) is shown as a
synthetic one-line program of the candidate's parameters; for a prompt program that
line calls ``language_model`` and its #Documentation says what the model reads
(``system`` as its instructions, before every input), as a traced LLM call's docstring
would, and the line on its commonest mistakes names the text to change. The model
replies with JSON ``{"reasoning", "answer", "suggestion": {name: new value}}``, keys
in that order in its schema (the reasoning first); the reply is
read tolerantly (:mod:`promptopt.optimizers.replies`), each suggested value is
checked for its parameter's kind, and one repair call names the exact problem
when nothing usable came back. A step whose repair fails too is spent, and the
next one tries other examples, so a bad reply never ends the search. Values equal
to the current ones, or to a candidate already scored, are a no-op
(:func:`~promptopt.optimizers.rewriters.noop`, counted in ``stats["noops"]``): the
repair call says so, and the next step's request is sampled, never repeated.

What each example shows, value clipping and the reply schema live in
:mod:`promptopt.optimizers.optoprime_views`. The meta-prompt lives in
``templates/optoprime.txt``, in parts headed by lines
``==== <part> ====``, filled with :class:`string.Template` (``$name``):

- ``system``: the optimizer's task and the reply format (no placeholders);
- ``user``: ``$instruction`` (the program's description), ``$code``,
  ``$documentation``, ``$variables``, ``$constraints``, ``$examples`` (the filled
  ``example`` parts) and ``$history`` (the filled ``history`` part, or nothing);
- ``example``: ``$number``, ``$inputs``, ``$others``, ``$outputs``, ``$feedback``;
- ``history``: ``$entries``, one line per earlier OptoPrime candidate;
- ``repair``: ``$problem`` (why the reply was unusable) and ``$names``.

Each request carries the reply's JSON schema (``LLMRequest.json_schema``, bounded
lengths, one property per variable in its kind's shape), so llama.cpp, vLLM and
OpenAI-compatible servers constrain the reply to readable JSON; the tolerant
reading and the repair call remain for backends that cannot.

Requests depend only on the search state: no ids, times or object addresses
reach the prompt, so a resumed run replays them from its store. A request this
optimizer already sent (a failed step on the same examples) is sent again
sampled, with a seed, instead of asking the same question at temperature 0; so is
every repair call, which at temperature 0 tends to get the unusable reply again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import ReplyParseError, UnchangedValueError
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.answers import answers_rule, mistakes
from promptopt.optimizers.base import (
    PROMPT_SHAPE,
    Evaluated,
    ExampleResult,
    Proposal,
    SearchState,
    config_of,
)
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.optimizers.optoprime_views import (
    View,
    kind_of,
    reply_schema,
    request_size,
    value_lines,
    view_of,
)
from promptopt.optimizers.replies import (
    check_value,
    counted_reply,
    match_name,
    parse_json_reply,
    placeholders,
)
from promptopt.optimizers.rewriters import noop
from promptopt.optimizers.shown import clip_text, input_fields, show_value

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = ["OptoPrime", "OptoPrimeConfig"]

_RESAMPLE_TEMPERATURE = 0.7
# a prompt program's one-line synthetic view: what its call does with each variable
_PROMPT_DOC = (
    "it reads `system` as its instructions (the system message), then each of "
    "`exemplars` as a solved example (the inputs as a user turn, the output as its reply), "
    "then the inputs in the user template, and replies with the output. `system` is read "
    "before every input: it tells the model how to decide, for any input."
)
_REPLY_KEYS = frozenset({"reasoning", "answer", "suggestion"})
_STATS = ("calls", "replies", "unparseable", "repair_calls", "repaired", "rejected", "accepted",
          "noops", "resampled", "request_errors", "failed_steps", "proposals",
          "budget_stop")  # fmt: skip


class OptoPrimeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(8, ge=1, description="Optimizer-model calls (a repair call is not counted).")
    examples_per_step: int = Field(
        2, ge=1, le=8, description="Failing examples of the best candidate shown in one call."
    )
    memory: int = Field(
        3, ge=0, description="Earlier changes and their validation scores shown as #History."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Optimizer-model temperature.")
    max_tokens: int = Field(600, ge=16, description="Longest optimizer-model reply, in tokens.")
    max_value_chars: int = Field(
        400, ge=40, description="Inputs, intermediate values and outputs are clipped to this."
    )
    max_variable_chars: int = Field(
        1500, ge=100, description="Trainable values (code included) are clipped to this."
    )
    json_schema: bool = Field(
        True,
        description="Send the reply's JSON schema with each request, so backends that can "
        "(llama.cpp, vLLM, OpenAI-compatible servers) constrain the reply to it.",
    )
    max_prompt_chars: int = Field(
        5000,
        ge=1000,
        description="Past this, fewer examples are shown and values clipped harder "
        "(a small model's context must hold the prompt and the reply).",
    )


class OptoPrime:
    """Propose one edited candidate per step from the traces of the best one's failures."""

    name: ClassVar[str] = "optoprime"
    racing: ClassVar[bool] = True  # observe copes with the candidates racing dropped
    Config: ClassVar[type[BaseModel]] = OptoPrimeConfig

    def __init__(self, config: OptoPrimeConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(OptoPrimeConfig, config)
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._steps_used = 0
        self._examples_cap = self.config.examples_per_step
        self._sent: set[str] = set()
        self._after_noop = False  # the last reply was a no-op: sample the next request

    # -- the protocol --------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        base = state.best
        if base is None or not state.trainable:
            return []
        shown: set[str] = set()
        while self._steps_used < self.config.steps:
            if state.remaining_calls is not None and state.remaining_calls < _step_calls(
                len(state.val)
            ):  # the share cannot pay for one more step
                self.stats["budget_stop"] += 1
                break
            self._steps_used += 1
            picked = self._pick(base, rng, shown)
            shown.update(str(r.example.id) for r in picked)
            proposal = await self._step(state, base, picked, llm)
            if proposal is not None:
                self.stats["proposals"] += 1
                return [proposal]
            self.stats["failed_steps"] += 1
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Nothing to keep: the memory is read from the state's history."""

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls the search can make after the seed is scored (an upper bound);
        the optimizer model's own calls are at most ``2 * steps`` more."""
        return self.config.steps * n_val

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each step within ``calls``: one proposal on the validation rows and
        at most two optimizer calls (a reply and its repair)."""
        steps = self.config.steps
        if calls is not None:
            steps = min(steps, calls // _step_calls(n_val))
        return [_step_calls(n_val)] * steps

    def build_request(
        self, state: SearchState, results: Sequence[ExampleResult], *, base: Evaluated
    ) -> LLMRequest:
        """The optimizer-model request for ``results`` of candidate ``base``."""
        callee = "language_model" if PROMPT_SHAPE in state.program_description else "program"
        views = [view_of(r, base.candidate.params, state.trainable, callee=callee) for r in results]
        request = None
        for count in range(len(views), 0, -1) if views else (0,):
            for scale in (1.0, 0.5, 0.25):
                request = self._render(state, base, views[:count], scale=scale)
                if request_size(request) <= self.config.max_prompt_chars:
                    return request
        assert request is not None
        return request

    # -- one step ----------------------------------------------------------

    def _pick(self, base: Evaluated, rng: random.Random, shown: set[str]) -> list[ExampleResult]:
        results = list(base.results)
        failing = [r for r in results if r.failed]
        if not failing:  # nothing fails: show the weakest
            weakest = sorted(results, key=lambda r: (r.score.value, str(r.example.id)))
            return weakest[: self._examples_cap]
        # examples not shown yet in this propose call first, then the others
        fresh = [r for r in failing if str(r.example.id) not in shown]
        seen = [r for r in failing if str(r.example.id) in shown]
        picked = rng.sample(fresh, min(self._examples_cap, len(fresh)))
        return picked + rng.sample(seen, min(self._examples_cap - len(picked), len(seen)))

    async def _step(
        self, state: SearchState, base: Evaluated, picked: Sequence[ExampleResult], llm: LLM
    ) -> Proposal | None:
        request = self.build_request(state, picked, base=base)
        answer = await self._ask(llm, request, sample=self._after_noop)
        if answer is None:
            return None
        reply, key = answer
        updated, problem = self._read(state, base, reply)
        repaired = False
        if not updated:
            names = ", ".join(repr(n) for n in state.trainable)
            note = (
                template_parts("optoprime")["repair"]
                .substitute(problem=problem, names=names)
                .strip()
            )
            retry = LLMRequest(
                messages=(
                    *request.messages,
                    # the start of the bad reply is enough, and keeps a small context free
                    Message("assistant", clip_text(reply, 2 * self.config.max_value_chars)),
                    Message("user", note),
                ),
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                json_schema=request.json_schema,
                tag="optimizer",
            )
            self.stats["repair_calls"] += 1
            # sampled: at temperature 0 a small model answers the note with its first reply
            # again, word for word (seen from Qwen2.5-Coder-1.5B on every repair of a run)
            second = await self._ask(llm, retry, sample=True)
            if second is None:
                return None
            updated, _ = self._read(state, base, second[0])
            key = second[1]
            if not updated:
                return None
            repaired = True
            self.stats["repaired"] += 1
        params = {**base.candidate.params, **updated}
        return Proposal(
            params=params,
            parent_id=base.candidate.id,
            meta={"kind": "optoprime", "updated": list(updated), "repaired": repaired},
            request_key=key,
        )

    async def _ask(
        self, llm: LLM, request: LLMRequest, *, sample: bool = False
    ) -> tuple[str, str] | None:
        """The reply's text and the request's key (``LLM.key``), or None on a request error.

        ``sample``: send it sampled, seeded, even when it is new (after a no-op reply)."""
        key = request.key()
        if sample or key in self._sent:
            # the same prompt again (same base, same examples, nothing new in the history),
            # or one after a no-op: at temperature 0 it could get the same reply, so sample
            request = dataclasses.replace(
                request,
                temperature=max(request.temperature, _RESAMPLE_TEMPERATURE),
                seed=self._steps_used,
            )
            self.stats["resampled"] += 1
        self._sent.add(key)
        response = await counted_reply(llm, request, self.stats)
        if response is None:
            # the prompt did not fit the model: show one example from now on
            self._examples_cap = 1
            return None
        return response.text, llm.key(request)

    def _read(self, state: SearchState, base: Evaluated, reply: str) -> tuple[dict[str, Any], str]:
        """The valid suggested values by parameter (in trainable order), or why there are none.

        Values that change nothing (the current ones, or a candidate already scored) are a
        no-op: counted, and the next request changes (the note, sampled) instead of repeating.
        """
        self._after_noop = False
        try:
            data = parse_json_reply(reply)
        except ReplyParseError as exc:
            self.stats["unparseable"] += 1
            return {}, f"it is not a JSON object ({exc})."
        suggestion = data.get("suggestion")
        if isinstance(suggestion, str) and "{" in suggestion:
            with contextlib.suppress(ReplyParseError):
                suggestion = parse_json_reply(suggestion)
        if not isinstance(suggestion, dict):  # the variables at the top level
            suggestion = {k: v for k, v in data.items() if k not in _REPLY_KEYS}
        if not suggestion:
            return {}, 'it has no "suggestion" object with new values.'
        params = base.candidate.params
        found: dict[str, Any] = {}
        problems = []
        refused = False
        for key, value in suggestion.items():
            name = match_name(key, state.trainable)
            if name is None:
                self.stats["rejected"] += 1
                refused = True
                problems.append(f"{key!r} is not a variable")
                continue
            try:
                found[name] = check_value(
                    kind_of(state, name, params.get(name)),
                    value,
                    params.get(name),
                    name=name,
                    fields=input_fields(state),
                    choices=state.choices,
                )
            except UnchangedValueError as exc:
                found[name] = params.get(name)  # no change: a no-op unless others change
                problems.append(str(exc))
            except ReplyParseError as exc:
                self.stats["rejected"] += 1
                refused = True
                problems.append(str(exc))
        ordered = {n: found[n] for n in state.trainable if n in found}
        if refused and all(params.get(n) == v for n, v in ordered.items()):
            return {}, "; ".join(problems) + "."
        self.stats["accepted"] += sum(params.get(n) != v for n, v in ordered.items())
        why = noop(state, {**params, **ordered}, base=params, what="value")
        if why:
            self.stats["noops"] += 1
            self._after_noop = True
            return {}, f"it {why[:-1]}; suggest a different change."
        return ordered, ""

    # -- rendering ---------------------------------------------------------

    def _render(
        self, state: SearchState, base: Evaluated, views: Sequence[View], *, scale: float
    ) -> LLMRequest:
        parts = template_parts("optoprime")
        limit = max(40, int(self.config.max_value_chars * scale))
        var_limit = max(100, int(self.config.max_variable_chars * scale))
        code: list[str] = []
        docs: dict[str, str] = {}
        descriptions: dict[str, str] = {}
        for view in views:
            code += [line for line in view.code if line not in code]
            docs.update((k, v) for k, v in view.documentation.items() if k not in docs)
            descriptions.update((k, v) for k, v in view.descriptions.items() if v)
        if PROMPT_SHAPE in state.program_description and not any(v.traced for v in views):
            # the docstring a traced LLM call would carry: without it Qwen2.5-Coder-1.5B read
            # `system` as notes on "the program" ("The program should analyze the overall
            # tone ..."), 9 of 12 replies on SST-2, none better than the seed
            docs.setdefault("language_model", _PROMPT_DOC)
        examples = "".join(
            parts["example"].substitute(
                number=number,
                inputs=value_lines(view.inputs, limit, dedupe=True),
                others=value_lines(view.others, limit),
                outputs=value_lines(view.outputs, limit),
                feedback=clip_text(view.feedback, limit),
            )
            for number, view in enumerate(views, 1)
        )
        entries = self._history(state, limit)
        user = parts["user"].substitute(
            instruction=state.program_description.strip() or "Make the program's outputs correct.",
            code="\n".join(code) or "(no traced steps)",
            documentation="\n".join(f"{k}: {v}" for k, v in docs.items()) or "(none)",
            variables=self._variables(state, base, var_limit),
            constraints=self._constraints(state, base, descriptions),
            examples=examples,
            history=parts["history"].substitute(entries=entries) if entries else "",
        )
        return optimizer_request(
            parts["system"],
            user,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            json_schema=(
                reply_schema(state, base, code_chars=self.config.max_variable_chars)
                if self.config.json_schema
                else ""
            ),
        )

    def _variables(self, state: SearchState, base: Evaluated, limit: int) -> str:
        out = []
        for name in state.trainable:
            value = base.candidate.params.get(name)
            kind = kind_of(state, name, value)
            if kind == "code" and isinstance(value, str):
                out.append(f"{name} ({kind}) =\n{clip_text(value.rstrip(), limit)}")
            else:
                out.append(f"{name} ({kind}) = {show_value(value, limit)}")
        return "\n".join(out)

    def _constraints(
        self, state: SearchState, base: Evaluated, descriptions: Mapping[str, str]
    ) -> str:
        fields = input_fields(state)
        shape = ", ".join(f'"{f}": ...' for f in fields) or "..."
        out = []
        for name in state.trainable:
            value = base.candidate.params.get(name)
            kind = kind_of(state, name, value)
            if kind == "code":
                rule = (
                    "the complete source of one Python function with the same name and "
                    "arguments; standard library only, imports inside the function"
                )
            elif kind == "exemplars":
                rule = f'a list of solved examples {{"inputs": {{{shape}}}, "output": "..."}}'
            else:
                kept = ", ".join("{" + p + "}" for p in placeholders(value))
                rule = "a non-empty text" + (f" keeping the placeholders {kept}" if kept else "")
            about = descriptions.get(name, "")
            out.append(f"{name}: {rule}" + (f" ({about})" if about else ""))
        if state.choices:
            out.append(answers_rule(state))
            # "the current text" read as the input `text` of SST-2: "The current text does not
            # contain any words that indicate a negative sentiment", and the seed back
            texts = [
                n
                for n in state.trainable
                if kind_of(state, n, base.candidate.params.get(n)) == "text"
            ]
            where = f"the new `{texts[0]}`" if len(texts) == 1 else "the new values"
            out.append(mistakes(base.results, who="the program", where=where))
        return "\n".join(o for o in out if o)

    def _history(self, state: SearchState, limit: int) -> str:
        if not self.config.memory:
            return ""
        by_id = {e.candidate.id: e for e in state.history}
        mine = [e for e in state.history if e.origin == self.name]
        lines = []
        for number, evaluated in enumerate(mine[-self.config.memory :], 1):
            parent = by_id.get(evaluated.parent_id or "")
            before = parent.candidate.params if parent else {}
            changed = [
                f"{name} = {show_value(evaluated.candidate.params.get(name), limit)}"
                for name in state.trainable
                if evaluated.candidate.params.get(name) != before.get(name)
            ]
            was = f" (before: {parent.score:.3f})" if parent else ""
            lines.append(
                f"{number}. changed {'; '.join(changed) or 'nothing'} -> validation score "
                f"{evaluated.score:.3f}{was}"
            )
        return "\n".join(lines)


def _step_calls(n_val: int) -> int:
    """Calls one step may make: its proposal on every validation row, two optimizer calls."""
    return n_val + 2
