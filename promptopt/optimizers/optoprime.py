"""OptoPrime (Trace/OPTO, Cheng et al., NeurIPS 2024): one optimizer-model call per step
over the traced computation, editing every kind of parameter (text, exemplars, code).

Each step takes the best candidate so far, picks a few of its failing validation
examples (with the injected ``rng``), and shows the optimizer model the joint
subgraph of each example's trace (:func:`~promptopt.graph.backward.joint_subgraph`):
the code once, then per example its inputs, intermediate values, output and
feedback. A result without a trace (a prompt program, an old result) is shown as a
synthetic one-line program of the candidate's parameters. The model replies with
JSON ``{"reasoning", "answer", "suggestion": {name: new value}}``; the reply is
read tolerantly (:mod:`promptopt.optimizers.replies`), each suggested value is
checked for its parameter's kind, and one repair call names the exact problem
when nothing usable came back. A step whose repair fails too is spent, and the
next one tries other examples, so a bad reply never ends the search.

The meta-prompt lives in ``templates/optoprime.txt``, in parts headed by lines
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
sampled, with a seed, instead of asking the same question at temperature 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from string import Template
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import BadRequestError, ReplyParseError
from promptopt.graph.backward import joint_subgraph
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.base import Evaluated, ExampleResult, Proposal, SearchState, candidate_id
from promptopt.optimizers.replies import check_value, match_name, parse_json_reply, placeholders

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = ["OptoPrime", "OptoPrimeConfig"]

_PART = re.compile(r"^==== (\w+) ====\n", re.MULTILINE)
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")
# reprs of objects, not data: ``<pkg.Client object at 0x...>`` and promptopt's LLM clients
_OBJECT_REPR = re.compile(
    r"^(?:<[^<>]* object(?: at 0x[0-9A-Fa-f]+)?>|(?:Blocking)?LLM\([^()]*\))$"
)
_RESAMPLE_TEMPERATURE = 0.7
_REPLY_KEYS = frozenset({"reasoning", "answer", "suggestion"})
_STATS = ("calls", "replies", "unparseable", "repair_calls", "repaired", "rejected", "accepted",
          "duplicates", "resampled", "request_errors", "failed_steps", "proposals")  # fmt: skip


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


@dataclass(frozen=True, slots=True)
class _View:
    """What one example shows of the program: a joint subgraph, or a synthetic one."""

    code: tuple[str, ...]
    documentation: dict[str, str]
    inputs: dict[str, Any]
    others: dict[str, Any]
    outputs: dict[str, Any]
    feedback: str
    descriptions: dict[str, str] = field(default_factory=dict)


class OptoPrime:
    """Propose one edited candidate per step from the traces of the best one's failures."""

    name: ClassVar[str] = "optoprime"
    Config: ClassVar[type[BaseModel]] = OptoPrimeConfig

    def __init__(self, config: OptoPrimeConfig | Mapping[str, Any] | None = None) -> None:
        self.config = (
            config
            if isinstance(config, OptoPrimeConfig)
            else OptoPrimeConfig.model_validate(dict(config or {}))
        )
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._steps_used = 0
        self._examples_cap = self.config.examples_per_step
        self._sent: set[str] = set()

    # -- the protocol --------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        base = state.best
        if base is None or not state.trainable:
            return []
        shown: set[str] = set()
        while self._steps_used < self.config.steps:
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

    def build_request(
        self, state: SearchState, results: Sequence[ExampleResult], *, base: Evaluated
    ) -> LLMRequest:
        """The optimizer-model request for ``results`` of candidate ``base``."""
        views = [_view(r, base.candidate.params, state.trainable) for r in results]
        request = None
        for count in range(len(views), 0, -1) if views else (0,):
            for scale in (1.0, 0.5, 0.25):
                request = self._render(state, base, views[:count], scale=scale)
                if _size(request) <= self.config.max_prompt_chars:
                    return request
        assert request is not None
        return request

    # -- one step ----------------------------------------------------------

    def _pick(self, base: Evaluated, rng: random.Random, shown: set[str]) -> list[ExampleResult]:
        results = list(base.results)
        failing = [r for r in results if r.error is not None or r.score.value < 1.0]
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
        reply = await self._ask(llm, request)
        if reply is None:
            return None
        updated, problem = self._read(state, base, reply)
        repaired = False
        if not updated:
            names = ", ".join(repr(n) for n in state.trainable)
            note = _parts()["repair"].substitute(problem=problem, names=names).strip()
            retry = LLMRequest(
                messages=(
                    *request.messages,
                    # the start of the bad reply is enough, and keeps a small context free
                    Message("assistant", _clip_text(reply, 2 * self.config.max_value_chars)),
                    Message("user", note),
                ),
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                json_schema=request.json_schema,
                tag="optimizer",
            )
            self.stats["repair_calls"] += 1
            second = await self._ask(llm, retry)
            if second is None:
                return None
            updated, _ = self._read(state, base, second)
            if not updated:
                return None
            repaired = True
            self.stats["repaired"] += 1
        params = {**base.candidate.params, **updated}
        return Proposal(
            params=params,
            parent_id=base.candidate.id,
            meta={"kind": "optoprime", "updated": list(updated), "repaired": repaired},
        )

    async def _ask(self, llm: LLM, request: LLMRequest) -> str | None:
        key = request.key()
        if key in self._sent:
            # the same prompt again (same base, same examples, nothing new in the history):
            # at temperature 0 it would get the same unusable reply, so sample, seeded
            request = dataclasses.replace(
                request,
                temperature=max(request.temperature, _RESAMPLE_TEMPERATURE),
                seed=self._steps_used,
            )
            self.stats["resampled"] += 1
        self._sent.add(key)
        self.stats["calls"] += 1
        try:
            response = await llm.acomplete(request)
        except BadRequestError:
            # the prompt did not fit the model: show one example from now on
            self.stats["request_errors"] += 1
            self._examples_cap = 1
            return None
        self.stats["replies"] += 1
        return response.text

    def _read(self, state: SearchState, base: Evaluated, reply: str) -> tuple[dict[str, Any], str]:
        """The valid suggested values by parameter (in trainable order), or why there are none."""
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
        for key, value in suggestion.items():
            name = match_name(key, state.trainable)
            if name is None:
                self.stats["rejected"] += 1
                problems.append(f"{key!r} is not a variable")
                continue
            try:
                found[name] = check_value(
                    _kind(state, name, params.get(name)),
                    value,
                    params.get(name),
                    name=name,
                    fields=_fields(state),
                )
            except ReplyParseError as exc:
                self.stats["rejected"] += 1
                problems.append(str(exc))
        self.stats["accepted"] += len(found)
        if not found:
            return {}, "; ".join(problems) + "."
        ordered = {n: found[n] for n in state.trainable if n in found}
        if candidate_id({**params, **ordered}) in state.evaluated_ids():
            self.stats["duplicates"] += 1
            return {}, "those exact values were tried already; suggest a different change."
        return ordered, ""

    # -- rendering ---------------------------------------------------------

    def _render(
        self, state: SearchState, base: Evaluated, views: Sequence[_View], *, scale: float
    ) -> LLMRequest:
        parts = _parts()
        limit = max(40, int(self.config.max_value_chars * scale))
        var_limit = max(100, int(self.config.max_variable_chars * scale))
        code: list[str] = []
        docs: dict[str, str] = {}
        descriptions: dict[str, str] = {}
        for view in views:
            code += [line for line in view.code if line not in code]
            docs.update((k, v) for k, v in view.documentation.items() if k not in docs)
            descriptions.update((k, v) for k, v in view.descriptions.items() if v)
        examples = "".join(
            parts["example"].substitute(
                number=number,
                inputs=_lines(view.inputs, limit, dedupe=True),
                others=_lines(view.others, limit),
                outputs=_lines(view.outputs, limit),
                feedback=_clip_text(view.feedback, limit),
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
        return LLMRequest(
            messages=(
                Message("system", parts["system"].template.strip()),
                Message("user", user.strip()),
            ),
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            json_schema=self._reply_schema(state, base) if self.config.json_schema else "",
            tag="optimizer",
        )

    def _reply_schema(self, state: SearchState, base: Evaluated) -> str:
        """The reply's JSON schema: a suggestion may hold each variable, in its kind's shape.

        Lengths are bounded so that a constrained small model cannot ramble past
        ``max_tokens`` and cut its own JSON short (llama.cpp keeps bounds up to 512).
        """
        text = {"type": "string", "minLength": 1, "maxLength": 400}
        fields = _fields(state)
        exemplar = {
            "type": "object",
            "properties": {
                "inputs": {
                    "type": "object",
                    "properties": {f: {"type": "string", "maxLength": 400} for f in fields},
                    "required": fields,
                    "additionalProperties": False,
                },
                "output": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            "required": ["inputs", "output"],
            "additionalProperties": False,
        }
        shapes = {
            "text": text,
            "code": {"type": "string", "minLength": 1, "maxLength": self.config.max_variable_chars},
            "exemplars": {"type": "array", "maxItems": 8, "items": exemplar},
        }
        variables = {
            name: shapes.get(_kind(state, name, base.candidate.params.get(name)), text)
            for name in state.trainable
        }
        schema = {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string", "maxLength": 300},
                "answer": {"type": "string", "maxLength": 100},
                "suggestion": {
                    "type": "object",
                    "properties": variables,
                    "additionalProperties": False,
                },
            },
            "required": ["reasoning", "answer", "suggestion"],
            "additionalProperties": False,
        }
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))

    def _variables(self, state: SearchState, base: Evaluated, limit: int) -> str:
        out = []
        for name in state.trainable:
            value = base.candidate.params.get(name)
            kind = _kind(state, name, value)
            if kind == "code" and isinstance(value, str):
                out.append(f"{name} ({kind}) =\n{_clip_text(value.rstrip(), limit)}")
            else:
                out.append(f"{name} ({kind}) = {_show(value, limit)}")
        return "\n".join(out)

    def _constraints(
        self, state: SearchState, base: Evaluated, descriptions: Mapping[str, str]
    ) -> str:
        fields = _fields(state)
        shape = ", ".join(f'"{f}": ...' for f in fields) or "..."
        out = []
        for name in state.trainable:
            value = base.candidate.params.get(name)
            kind = _kind(state, name, value)
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
            out.append("The final output must be one of: " + ", ".join(state.choices))
        return "\n".join(out)

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
                f"{name} = {_show(evaluated.candidate.params.get(name), limit)}"
                for name in state.trainable
                if evaluated.candidate.params.get(name) != before.get(name)
            ]
            was = f" (before: {parent.score:.3f})" if parent else ""
            lines.append(
                f"{number}. changed {'; '.join(changed) or 'nothing'} -> validation score "
                f"{evaluated.score:.3f}{was}"
            )
        return "\n".join(lines)


# -- helpers -----------------------------------------------------------------


@cache
def _parts() -> dict[str, Template]:
    text = files("promptopt.optimizers").joinpath("templates/optoprime.txt").read_text("utf-8")
    pieces = _PART.split(text)
    return {name: Template(body) for name, body in zip(pieces[1::2], pieces[2::2], strict=True)}


def _size(request: LLMRequest) -> int:
    return sum(len(m.content) for m in request.messages)


def _kind(state: SearchState, name: str, value: Any) -> str:
    kinds = getattr(state, "kinds", None) or {}
    if name in kinds:
        return kinds[name]
    if isinstance(value, list):
        return "exemplars"
    if name.endswith(".code"):
        return "code"
    return "text"


def _fields(state: SearchState) -> list[str]:
    """The input fields of an example (what an exemplar's inputs must hold)."""
    for example in (*state.train, *state.val):
        return [str(k) for k in example.inputs]
    return []


def _view(result: ExampleResult, params: Mapping[str, Any], trainable: Sequence[str]) -> _View:
    feedback = result.score.feedback or result.error or f"score {result.score.value:g}"
    run = getattr(result, "trace", None)
    if run is not None:
        try:
            nodes = run.nodes
            sub = joint_subgraph(run, params=trainable) if nodes else None
        except Exception:  # an unreadable trace must not end the run: show the synthetic view
            sub = None
        if sub is not None and sub.code:
            return _View(
                code=sub.code,
                documentation=dict(sub.documentation),
                inputs=dict(sub.inputs),
                others=dict(sub.others),
                outputs=dict(sub.outputs),
                feedback=sub.feedback or feedback,
                descriptions={n.name: n.description for n in nodes if n.kind == "param"},
            )
    inputs = {str(k): v for k, v in result.example.inputs.items()}
    args = ", ".join(f"{n}={n}" for n in (*inputs, *(t for t in trainable if t in params)))
    return _View(
        code=(f"output = program({args})",),
        documentation={},
        inputs=inputs,
        others={},
        outputs={"output": result.output if result.output is not None else result.error},
        feedback=feedback,
    )


def _clip_text(text: str, limit: int) -> str:
    text = _ADDRESS.sub("", text)
    return text if len(text) <= limit else f"{text[:limit]} ... [{len(text) - limit} more chars]"


def _show(value: Any, limit: int) -> str:
    """``value`` as one line of JSON, clipped to about ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        return json.dumps(_ADDRESS.sub("", value[:limit]), ensure_ascii=False) + (
            f" ... [{len(value) - limit} more chars]"
        )
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return _clip_text(text, limit)


def _lines(values: Mapping[str, Any], limit: int, *, dedupe: bool = False) -> str:
    out, seen = [], {}
    for name, value in values.items():
        if isinstance(value, str) and _OBJECT_REPR.match(value):
            continue  # a client object: nothing to learn from its repr
        shown = _show(value, limit)
        if dedupe and shown in seen and len(shown) > 20:
            out.append(f"{name} = (same as {seen[shown]})")
            continue
        seen.setdefault(shown, name)
        out.append(f"{name} = {shown}")
    return "\n".join(out) or "(none)"
