"""Asking an optimizer model for a new version of a text parameter, and telling a real change
from a no-op: a version equal to the current value, or one whose candidate was scored (or
proposed) already. Two ways of asking, one per pair of optimizers:

- :class:`MarkedRewriter` (MCTS's rewrite step, OPRO's proposal step, GEPA's reflection)
  asks for several versions, read with :func:`~promptopt.optimizers.replies.marked_texts`
  (texts wrapped in ``<START>`` and ``<END>``) and checked with
  :func:`~promptopt.optimizers.replies.check_value` (a text: non-empty, placeholders kept; a
  code parameter, for GEPA: one function with the same name and arguments). After a reply
  with no new version it sends the reply and a note saying what was wrong back to the model,
  sampled with a fresh seed, up to ``retries`` times. Seeds come from the ``rng`` handed in,
  so a replayed run sends the very same requests.
  :func:`text_targets` and :func:`show_example` render the parts of a request
  these optimizers share: which parameters may be rewritten, one example (inputs, output,
  expected answer, feedback) and the rules a new version must keep.
- :class:`JsonRewriter` (SPO, PROMST) asks for one new prompt in a JSON reply
  (:func:`~promptopt.optimizers.replies.read_rewrite` takes it out and checks it keeps the
  old one's ``{placeholders}``) until a reply is new: after an unreadable reply, a no-op
  (:func:`noop`) or, with ``keep_choices`` (SPO), a prompt without a choice the old one named,
  it changes the next request (the problem shown, a fresh seed) instead of repeating it;
  :meth:`JsonRewriter.ask_many` sends several such asks at once. :func:`text_param` picks the
  parameter it rewrites (the configured one, else the program's first of kind ``text``).

Both count what happened in the optimizer's stats (:data:`MARKED_REWRITE_STATS`,
:data:`JSON_REWRITE_STATS`); the marked one counts, too, a reply that reached its
``max_tokens`` with its last version still open (``cut_off``: it ends mid-sentence), and a text
version read without its repeated lines (``repeats_cut``: a sampled loop, ``drop_repeats``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import OptimizerError, ReplyParseError, UnchangedValueError
from promptopt.label_lists import dropped_choices
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.base import (
    PROMPT_SHAPE,
    ExampleResult,
    SearchState,
    candidate_id,
    gather_all,
)
from promptopt.optimizers.copies import drop_repeats, holds_quote, input_runs, same_words
from promptopt.optimizers.replies import (
    check_value,
    counted_reply,
    cut_off,
    marked_texts,
    read_rewrite,
    unwrap,
)
from promptopt.optimizers.shown import clip_text, input_fields, show_value

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = [
    "JSON_REWRITE_STATS",
    "MARKED_REWRITE_STATS",
    "SEED_RANGE",
    "JsonRewriter",
    "MarkedRewriter",
    "Rewrite",
    "RewriteConfig",
    "Versions",
    "inputs_text",
    "noop",
    "quoted_lines",
    "same_words",
    "show_example",
    "text_param",
    "text_targets",
]

# what a MarkedRewriter counts about its model's replies (OptimizeResult.optimizer_stats)
MARKED_REWRITE_STATS = ("calls", "replies", "noops", "invalid", "retries", "request_errors",
                        "cut_off", "repeats_cut")  # fmt: skip
_RETRY_TEMPERATURE = 0.7
SEED_RANGE = 2**31  # seeds of sampled requests are drawn below this
_NOOP = "That version is the current {what}, or one that was tried already."
_NOTHING = "No new version was found between <START> and <END>."
_ECHO = (
    "That version copies parts of this request (its examples or the program's shape): write "
    "only the {what} itself."
)
_DROPPED = "wrote a prompt that no longer names {answers}: keep every answer the current one names."
_WHAT = {"text": "text", "code": "function"}  # what a value of each kind is called in a note
_QUOTED_MIN = 12  # shorter lines of a request are too common to call a copy


def quoted_lines(
    *blocks: str, inputs: Sequence[Mapping[str, Any]] = (), current: Any = None
) -> list[str | tuple[str, ...]]:
    """What a new version must not hold: the program's shape, as the description names it,
    the lines of ``blocks`` (the examples a request shows) long enough to be a copy, and
    the word runs that copy one of the shown ``inputs`` and ``current`` lacks (input_runs)."""
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    runs = input_runs(inputs, allowed=str(current or ""))
    return [PROMPT_SHAPE, *sorted(line for line in lines if len(line) >= _QUOTED_MIN), *runs]


class RewriteConfig(BaseModel):
    """The settings every rewriting optimizer has (MCTS and OPRO extend it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(
        1.0, ge=0.0, le=2.0, description="Optimizer-model temperature (both papers: 1.0)."
    )
    max_tokens: int = Field(600, ge=16, description="Longest optimizer-model reply, in tokens.")
    retries: int = Field(
        1, ge=0, description="Changed requests sent after a reply with no new version."
    )
    params: list[str] | None = Field(
        None, description="Text parameters to rewrite (default: every trainable text parameter)."
    )
    max_value_chars: int = Field(
        300, ge=40, description="Texts and example values shown to the model are clipped to this."
    )


class Versions(NamedTuple):
    """What :meth:`MarkedRewriter.versions` found: the new values, and the key (``LLM.key``) of
    the request whose reply held them (a proposal's ``request_key``; None when none did)."""

    values: list[str]
    key: str | None = None


class Rewrite(NamedTuple):
    """What :class:`JsonRewriter` got: the new params, the reply, and the key (``LLM.key``) of
    the request it answered (a proposal's ``request_key``)."""

    params: dict[str, Any]
    reply: str
    key: str


class MarkedRewriter:
    """Sends a rewrite request and returns the new versions in its reply (see the module doc)."""

    def __init__(self, *, stats: dict[str, int], retries: int, retry: Template) -> None:
        self.stats = stats
        self.retries = retries
        self.retry = retry
        for key in MARKED_REWRITE_STATS:
            stats.setdefault(key, 0)

    async def versions(
        self,
        llm: LLM,
        request: LLMRequest,
        *,
        name: str,
        base: Mapping[str, Any],
        count: int,
        taken: Collection[str],
        fields: Sequence[str],
        rng: random.Random,
        quoted: Collection[str | tuple[str, ...]] = (),
        kind: str = "text",
    ) -> Versions:
        """Up to ``count`` new values of parameter ``name`` (of ``kind``: ``text``, or
        ``code``, the source of one function) of candidate ``base``, with the key of the
        request whose reply held them (the engine links each proposal to it: the preference
        export's optimizer level).

        A value whose candidate id is in ``taken`` is a no-op; so is a text whose words
        are the current value's (punctuation, case and spacing aside), and a function
        that parses to the current one. A value holding one of the ``quoted`` texts
        (parts of the request that are not a prompt: the examples shown, the program's
        shape) or word runs (a shown input, :func:`quoted_lines`) copied the request and
        is invalid. Returns an empty list when every attempt came back without a new version.
        """
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            response = await counted_reply(llm, request, self.stats)
            if response is None:  # the prompt does not fit the model: nothing to retry
                return Versions([])
            reply = response.text
            if response.usage.completion_tokens >= (request.max_tokens or 0) > 0 and cut_off(reply):
                self.stats["cut_off"] += 1  # its last version ends where max_tokens did
            found, problem = self._read(
                reply, name=name, base=base, taken=taken, fields=fields, quoted=quoted, kind=kind
            )
            if found:
                return Versions(found[:count], llm.key(request))
            note = self.retry.substitute(problem=problem, name=name).strip()
            request = dataclasses.replace(
                request,
                messages=(*request.messages, Message("assistant", clip_text(reply, 1500)),
                          Message("user", note)),
                temperature=max(request.temperature, _RETRY_TEMPERATURE),
                seed=rng.randrange(SEED_RANGE),
            )  # fmt: skip
        return Versions([])

    def _read(
        self,
        reply: str,
        *,
        name: str,
        base: Mapping[str, Any],
        taken: Collection[str],
        fields: Sequence[str],
        quoted: Collection[str | tuple[str, ...]],
        kind: str,
    ) -> tuple[list[str], str]:
        """The new versions in ``reply``, or none and what to tell the model."""
        current = base.get(name)
        what = _WHAT.get(kind, kind)
        found: list[str] = []
        noop, problem = False, _NOTHING
        for text in map(unwrap, marked_texts(reply)):
            if kind == "text" and (trimmed := drop_repeats(text)) != text:
                self.stats["repeats_cut"] += 1  # a sampled loop: the text once is the version
                text = trimmed
            if kind == "text" and isinstance(current, str) and same_words(text, current):
                noop = True
                continue
            if holds_quote(text, quoted):
                problem = _ECHO.format(what=what)
                continue
            try:
                value = check_value(kind, text, current, name=name, fields=fields)
            except UnchangedValueError:  # the current function, laid out anew
                noop = True
                continue
            except ReplyParseError as exc:
                problem = f"{exc}."
                continue
            if candidate_id({**base, name: value}) in taken or value in found:
                noop = True
                continue
            found.append(value)
        if not found:
            self.stats["noops" if noop else "invalid"] += 1
        return found, _NOOP.format(what=what) if noop and problem == _NOTHING else problem


def text_targets(
    state: SearchState, wanted: Sequence[str] | None, *, optimizer: str,
    kinds: Sequence[str] = ("text",),
) -> list[str]:  # fmt: skip
    """The parameters to rewrite: ``wanted`` (checked), else every trainable one of ``kinds``
    (texts unless told; GEPA adds ``code``), in the program's order."""
    texts = [n for n in state.trainable if state.kinds.get(n, "text") in kinds]
    what = " or ".join(kinds)
    if wanted:
        unknown = [n for n in wanted if n not in texts]
        if unknown:
            raise OptimizerError(
                f"{optimizer}: params {unknown!r} are not trainable {what} parameters of the "
                f"program (its {what} parameters: {', '.join(texts) or 'none'})"
            )
        return list(wanted)
    if not texts:
        raise OptimizerError(
            f"the {optimizer} optimizer rewrites {what} parameters, and the program has none "
            f"trainable (it has: {', '.join(state.trainable) or 'nothing'}); make a prompt "
            f"trainable (program.trainable: [system]) or use another optimizer"
        )
    return texts


def show_example(example: Example, *, limit: int, result: ExampleResult | None = None) -> str:
    """One example as lines: its inputs, then (with a result) the output, the expected
    answer, then (with a result) the metric's feedback, if any."""
    lines = [f"{key}: {_shown(value, limit)}" for key, value in example.inputs.items()]
    if result is not None:
        produced = result.output if result.output is not None else f"(failed: {result.error})"
        lines.append(f"output: {_shown(produced, limit)}")
    lines.append(f"expected output: {_shown(example.target, limit)}")
    if result is not None and result.score.feedback:
        lines.append(f"feedback: {clip_text(result.score.feedback, limit)}")
    return "\n".join(lines)


def _shown(value: Any, limit: int) -> str:
    return clip_text(value, limit) if isinstance(value, str) else show_value(value, limit)


# -- one new prompt in a JSON reply (SPO, PROMST) ----------------------------------------

# what a JsonRewriter counts in its optimizer's stats
JSON_REWRITE_STATS = ("calls", "replies", "unparseable", "noops", "request_errors")


def text_param(state: SearchState, configured: str | None, *, optimizer: str) -> str:
    """The parameter to rewrite: ``configured`` if given, else the first of kind ``text``."""
    if configured is not None:
        if configured not in state.trainable:
            raise OptimizerError(
                f"{optimizer} optimizer: param {configured!r} is not a trainable parameter "
                f"of the program ({', '.join(state.trainable) or 'none'})"
            )
        return configured
    texts = state.of_kind("text")
    if not texts:
        raise OptimizerError(
            f"the {optimizer} optimizer rewrites a text parameter, and the program has none "
            f"(it has: {', '.join(state.trainable) or 'nothing trainable'})"
        )
    return texts[0]


def noop(
    state: SearchState, params: Mapping[str, Any], *, base: Mapping[str, Any],
    proposed: Collection[str] = (), what: str = "prompt",
) -> str:  # fmt: skip
    """Why ``params`` change nothing ("" if they do): equal to ``base``, or already tried;
    ``what`` names the thing suggested in the reason."""
    if dict(params) == dict(base):
        return f"suggested the current {what} unchanged."
    cid = candidate_id(params)
    if cid in state.evaluated_ids() or cid in proposed:
        return f"suggested a {what} that was already tried."
    return ""


def inputs_text(inputs: Mapping[str, Any], limit: int) -> str:
    """An example's inputs, one ``field: value`` line each, values clipped to ``limit``."""
    return "\n".join(f"{name}: {clip_text(str(value), limit)}" for name, value in inputs.items())


@dataclass
class JsonRewriter:
    """Asks an optimizer model for a new value of ``target`` until one is usable and new.

    ``stats`` is the optimizer's counter dict (the keys of ``JSON_REWRITE_STATS`` are
    incremented); ``problem`` is why the last reply was unusable, shown in the next
    request (it persists across calls until a reply is used). ``build(problem, seed)``
    makes a request; every request sent gets its own seed, counted from 0 in the
    order the requests are made, so a replayed run sends the same ones.
    """

    target: str
    stats: dict[str, Any]
    retries: int = 1
    keep_choices: bool = False
    problem: str = ""
    proposed: set[str] = field(default_factory=set)
    seeds: int = 0  # seeds handed out so far

    async def ask(
        self,
        state: SearchState,
        llm: LLM,
        base: Mapping[str, Any],
        build: Callable[[str, int], LLMRequest],
    ) -> Rewrite | None:
        """New params (``base`` with ``target`` rewritten), the reply and its request's key,
        or None after ``1 + retries`` unusable replies (or a request the model refused)."""
        answer, self.problem, used = await self._attempts(
            state, llm, base, build, seeds=range(self.seeds, self.seeds + 1 + self.retries)
        )
        self.seeds += used
        if answer is not None:
            self.proposed.add(candidate_id(answer.params))
        return answer

    async def ask_many(
        self,
        state: SearchState,
        llm: LLM,
        base: Mapping[str, Any],
        build: Callable[[str, int], LLMRequest],
        *,
        count: int,
    ) -> list[Rewrite]:
        """``count`` rewrites asked at once (none depends on another), each as :meth:`ask`;
        a rewrite equal to an earlier one of the same batch is a no-op, not proposed."""
        per = 1 + self.retries
        first, self.seeds = self.seeds, self.seeds + count * per  # drawn before they start
        outcomes = await gather_all(*(
            self._attempts(state, llm, base, build,
                           seeds=range(first + i * per, first + (i + 1) * per))
            for i in range(count)
        ))  # fmt: skip
        found = []
        for answer, problem, _ in outcomes:
            if answer is None:
                self.problem = problem
                continue
            cid = candidate_id(answer.params)
            if cid in self.proposed:
                self.stats["noops"] += 1
                continue
            self.proposed.add(cid)
            found.append(answer)
        if found:
            self.problem = ""
        return found

    async def _attempts(
        self,
        state: SearchState,
        llm: LLM,
        base: Mapping[str, Any],
        build: Callable[[str, int], LLMRequest],
        *,
        seeds: range,
    ) -> tuple[Rewrite | None, str, int]:
        """The first usable answer (or None), the problem to show next, the seeds used."""
        problem = self.problem
        for used, seed in enumerate(seeds, 1):
            request = build(problem, seed)
            response = await counted_reply(llm, request, self.stats)
            if response is None:
                return None, problem, used
            reply = response.text
            try:
                value = read_rewrite(reply, key="prompt", old=base.get(self.target),
                                     name=self.target, fields=input_fields(state))  # fmt: skip
            except ReplyParseError as exc:
                self.stats["unparseable"] += 1
                problem = str(exc)
                continue
            lost = dropped_choices(base.get(self.target), value, state.choices)
            if self.keep_choices and lost:
                self.stats["dropped_choices"] = self.stats.get("dropped_choices", 0) + 1  # SPO
                problem = _DROPPED.format(answers=", ".join(repr(c) for c in lost))
                continue
            params = {**base, self.target: value}
            why = noop(state, params, base=base, proposed=self.proposed)
            if why:
                self.stats["noops"] += 1
                problem = why
                continue
            return Rewrite(params, reply, llm.key(request)), "", used
        return None, problem, len(seeds)
