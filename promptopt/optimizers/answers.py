"""What a rewrite request says about answers: :func:`rules` (the placeholders and the allowed
answers a new version must keep, then the commonest mistakes), :func:`answers_rule`, and
:func:`mistakes`, the current text's commonest confusions in a sentence (:func:`confusions`),
which MCTS, OPRO, GEPA, PROMST and OptoPrime show their optimizer model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from promptopt.optimizers.base import ExampleResult, SearchState
from promptopt.task.placeholders import placeholders

__all__ = ["answers_rule", "confusions", "mistakes", "rules"]


def rules(
    state: SearchState, current: Any, results: Sequence[ExampleResult] = (), *, name: str
) -> str:
    """What any new version must keep: the placeholders, and the allowed answers; for a
    program with ``choices``, also the commonest mistakes among ``results`` (the current
    text's scored examples; see :func:`mistakes`), naming the text ``name``: "the current
    text" read as the input where an input field is called ``text`` (SST-2's)."""
    out = []
    kept = placeholders(current)
    if kept:
        out.append(
            "Keep the placeholders "
            + ", ".join("{" + p + "}" for p in kept)
            + " exactly as written."
        )
    if state.choices:
        out += [answers_rule(state),
                mistakes(results, who=f'the text "{name}"', where=f'the new "{name}"')]  # fmt: skip
    return " ".join(o for o in out if o)


def answers_rule(state: SearchState) -> str:
    """For a program with ``choices``, the sentence naming the allowed answers; else ""."""
    if not state.choices:
        return ""
    return "The program's answer must be one of: " + ", ".join(state.choices) + "."


def _scored(results: Sequence[ExampleResult]) -> tuple[list[ExampleResult], list[ExampleResult]]:
    scored = [r for r in results if r.example.target is not None and r.error is None]
    return scored, [r for r in scored if r.score.value < 1.0 and r.output is not None]


def confusions(results: Sequence[ExampleResult], *, top: int = 3) -> list[str]:
    """The commonest wrong answers among ``results``, as :func:`mistakes` words them."""
    scored, wrong = _scored(results)
    expected = Counter(str(r.example.target) for r in scored)
    pairs = Counter((str(r.output).strip(), str(r.example.target)) for r in wrong)
    return [f"answered {got!r} where {want!r} was right ({n} of {expected[want]} such inputs)"
            for (got, want), n in pairs.most_common(top)]  # fmt: skip


def mistakes(results: Sequence[ExampleResult], *, who: str, where: str, top: int = 3) -> str:
    """:func:`confusions` in a sentence, or "": "On 50 scored inputs {who} got 21 wrong; most
    often it answered 'entity' where 'human' was right (12 of 14 such inputs), ... Say in
    {where} how to tell these answers apart." A small optimizer model reads the labels
    confused better so than from examples. ``who`` and ``where`` name the text by its name,
    never "the current text", which a model read as the input on SST-2 (field ``text``)."""
    scored, wrong = _scored(results)
    return (f"On {len(scored)} scored inputs {who} got {len(wrong)} wrong; most often "
            f"it {', '.join(confusions(results, top=top))}. Say in {where} how to tell "
            "these answers apart.") if wrong else ""  # fmt: skip
