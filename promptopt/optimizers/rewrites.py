"""Rewriting one text parameter (SPO, PROMST): which parameter, and asking for a new value.

:func:`text_param` picks the parameter an instruction optimizer rewrites (the
configured one, else the program's first of kind ``text``). :func:`read_rewrite`
takes the new prompt out of a JSON reply and checks it keeps the old one's
``{placeholders}``; :func:`noop` says why a rewrite changes nothing (equal to
the current value, or to a candidate already scored or proposed).
:class:`Rewriter` asks until a reply is new: after an unreadable reply or a
no-op it changes the next request (the caller's builder gets the problem to show
and a fresh seed) instead of repeating it, and counts what happened in the
optimizer's stats; :meth:`Rewriter.ask_many` sends several such asks at once.
:func:`reply_schema` is the JSON schema of a reply with the given string keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptopt.errors import BadRequestError, OptimizerError, ReplyParseError
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.base import SearchState, candidate_id, gather_all
from promptopt.optimizers.optoprime_views import clip_text
from promptopt.optimizers.replies import check_value, parse_json_reply

if TYPE_CHECKING:
    from promptopt.llm.client import LLM

__all__ = [
    "REWRITE_STATS",
    "Rewriter",
    "inputs_text",
    "noop",
    "read_rewrite",
    "reply_schema",
    "text_param",
]

# what a Rewriter counts in its optimizer's stats
REWRITE_STATS = ("calls", "replies", "unparseable", "noops", "request_errors")


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


def read_rewrite(reply: str, *, key: str, old: Any, name: str) -> str:
    """The new value under ``key`` of a JSON reply; raises ReplyParseError saying why not.

    An unchanged value is returned (see :func:`noop`); a value that drops one of
    ``old``'s placeholders is refused.
    """
    data = parse_json_reply(reply)
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReplyParseError(f'had no "{key}" with the new prompt as a text.')
    if isinstance(old, str) and value.strip() == old.strip():
        return old
    try:
        return check_value("text", value, old, name=name)
    except ReplyParseError as exc:
        raise ReplyParseError(f"was refused: {exc}.") from None


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


def reply_schema(keys: Sequence[tuple[str, int]]) -> str:
    """A JSON schema (as text) of an object with these string keys, each bounded in length."""
    properties = {
        key: {"type": "string", "minLength": 1, "maxLength": limit} for key, limit in keys
    }
    schema = {
        "type": "object",
        "properties": properties,
        "required": [key for key, _ in keys],
        "additionalProperties": False,
    }
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@dataclass
class Rewriter:
    """Asks an optimizer model for a new value of ``target`` until one is usable and new.

    ``stats`` is the optimizer's counter dict (the keys of ``REWRITE_STATS`` are
    incremented); ``problem`` is why the last reply was unusable, shown in the next
    request (it persists across calls until a reply is used). ``build(problem, seed)``
    makes a request; every request sent gets its own seed, counted from 0 in the
    order the requests are made, so a replayed run sends the same ones.
    """

    target: str
    stats: dict[str, Any]
    retries: int = 1
    problem: str = ""
    proposed: set[str] = field(default_factory=set)
    seeds: int = 0  # seeds handed out so far

    async def ask(
        self,
        state: SearchState,
        llm: LLM,
        base: Mapping[str, Any],
        build: Callable[[str, int], LLMRequest],
    ) -> tuple[dict[str, Any], str] | None:
        """New params (``base`` with ``target`` rewritten) and the reply, or None after
        ``1 + retries`` unusable replies (or a request the model refused)."""
        answer, self.problem, used = await self._attempts(
            state, llm, base, build, seeds=range(self.seeds, self.seeds + 1 + self.retries)
        )
        self.seeds += used
        if answer is not None:
            self.proposed.add(candidate_id(answer[0]))
        return answer

    async def ask_many(
        self,
        state: SearchState,
        llm: LLM,
        base: Mapping[str, Any],
        build: Callable[[str, int], LLMRequest],
        *,
        count: int,
    ) -> list[tuple[dict[str, Any], str]]:
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
            cid = candidate_id(answer[0])
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
    ) -> tuple[tuple[dict[str, Any], str] | None, str, int]:
        """The first usable answer (or None), the problem to show next, the seeds used."""
        problem = self.problem
        for used, seed in enumerate(seeds, 1):
            request = build(problem, seed)
            self.stats["calls"] += 1
            try:
                reply = (await llm.acomplete(request)).text
            except BadRequestError:
                self.stats["request_errors"] += 1
                return None, problem, used
            self.stats["replies"] += 1
            try:
                value = read_rewrite(
                    reply, key="prompt", old=base.get(self.target), name=self.target
                )
            except ReplyParseError as exc:
                self.stats["unparseable"] += 1
                problem = str(exc)
                continue
            params = {**base, self.target: value}
            why = noop(state, params, base=base, proposed=self.proposed)
            if why:
                self.stats["noops"] += 1
                problem = why
                continue
            return (params, reply), "", used
        return None, problem, len(seeds)
