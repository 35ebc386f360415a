"""Asking an optimizer model for new versions of one text parameter, and what such a request shows.

MCTS's rewrite step and OPRO's proposal step both ask for new versions of a
text and must tell a real change from a no-op: a version equal to the current
value, or one whose candidate was scored (or proposed) already. A
:class:`Rewriter` counts such a reply and changes the next request instead of
repeating it: the reply and a note saying what was wrong go back to the model,
sampled with a fresh seed, up to ``retries`` times. Replies are read with
:func:`~promptopt.optimizers.replies.marked_texts` (texts wrapped in ``<START>``
and ``<END>``) and checked with :func:`~promptopt.optimizers.replies.check_value`
(non-empty, placeholders kept). Seeds come from the ``rng`` handed in, so a
replayed run sends the very same requests.

:func:`text_targets`, :func:`show_example` and :func:`rules` render the parts of
a request both optimizers share: which parameters may be rewritten, one
example (inputs, output, expected answer, feedback) and the rules a new
version must keep.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection, Mapping, Sequence
from string import Template
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import BadRequestError, OptimizerError, ReplyParseError
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.base import ExampleResult, SearchState, candidate_id
from promptopt.optimizers.optoprime_views import clip_text, show_value
from promptopt.optimizers.replies import check_value, marked_texts, placeholders

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = [
    "REWRITE_STATS",
    "SEED_RANGE",
    "RewriteConfig",
    "Rewriter",
    "rules",
    "show_example",
    "text_targets",
]

# what a rewriting optimizer counts about its model's replies (OptimizeResult.optimizer_stats)
REWRITE_STATS = ("calls", "replies", "noop", "invalid", "retries", "request_errors")
_RETRY_TEMPERATURE = 0.7
SEED_RANGE = 2**31  # seeds of sampled requests are drawn below this
_NOOP = "That version is the current text, or one that was tried already."
_NOTHING = "No new version was found between <START> and <END>."


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


class Rewriter:
    """Sends a rewrite request and returns the new versions in its reply (see the module doc)."""

    def __init__(self, *, stats: dict[str, int], retries: int, retry: Template) -> None:
        self.stats = stats
        self.retries = retries
        self.retry = retry
        for key in REWRITE_STATS:
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
    ) -> list[str]:
        """Up to ``count`` new values of text parameter ``name`` of candidate ``base``.

        A value whose candidate id is in ``taken`` is a no-op. Returns an empty
        list when every attempt came back without a new version.
        """
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.stats["calls"] += 1
            try:
                reply = (await llm.acomplete(request)).text
            except BadRequestError:  # the prompt does not fit the model: nothing to retry
                self.stats["request_errors"] += 1
                return []
            self.stats["replies"] += 1
            found, problem = self._read(reply, name=name, base=base, taken=taken, fields=fields)
            if found:
                return found[:count]
            note = self.retry.substitute(problem=problem, name=name).strip()
            request = dataclasses.replace(
                request,
                messages=(*request.messages, Message("assistant", clip_text(reply, 1500)),
                          Message("user", note)),
                temperature=max(request.temperature, _RETRY_TEMPERATURE),
                seed=rng.randrange(SEED_RANGE),
            )  # fmt: skip
        return []

    def _read(
        self,
        reply: str,
        *,
        name: str,
        base: Mapping[str, Any],
        taken: Collection[str],
        fields: Sequence[str],
    ) -> tuple[list[str], str]:
        """The new versions in ``reply``, or none and what to tell the model."""
        current = base.get(name)
        found: list[str] = []
        noop, problem = False, _NOTHING
        for text in marked_texts(reply):
            if isinstance(current, str) and text.strip() == current.strip():
                noop = True
                continue
            try:
                value = check_value("text", text, current, name=name, fields=fields)
            except ReplyParseError as exc:
                problem = f"{exc}."
                continue
            if candidate_id({**base, name: value}) in taken or value in found:
                noop = True
                continue
            found.append(value)
        if not found:
            self.stats["noop" if noop else "invalid"] += 1
        return found, _NOOP if noop and problem == _NOTHING else problem


def text_targets(state: SearchState, wanted: Sequence[str] | None, *, optimizer: str) -> list[str]:
    """The text parameters to rewrite: ``wanted`` (checked), else every trainable text."""
    texts = state.of_kind("text")
    if wanted:
        unknown = [n for n in wanted if n not in texts]
        if unknown:
            raise OptimizerError(
                f"{optimizer}: params {unknown!r} are not trainable text parameters of the "
                f"program (its text parameters: {', '.join(texts) or 'none'})"
            )
        return list(wanted)
    if not texts:
        raise OptimizerError(
            f"the {optimizer} optimizer rewrites text parameters, and the program has none "
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


def rules(state: SearchState, current: Any) -> str:
    """What any new version must keep: the placeholders, and the allowed answers."""
    out = []
    kept = placeholders(current)
    if kept:
        out.append(
            "Keep the placeholders "
            + ", ".join("{" + p + "}" for p in kept)
            + " exactly as written."
        )
    if state.choices:
        out.append("The program's answer must be one of: " + ", ".join(state.choices) + ".")
    return " ".join(out)


def _shown(value: Any, limit: int) -> str:
    return clip_text(value, limit) if isinstance(value, str) else show_value(value, limit)
