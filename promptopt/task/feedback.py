"""Feedback rules (PROMST's human feedback): error types recognised in failing examples.

A task file's ``feedback:`` list declares rules (:class:`~promptopt.task.spec.FeedbackRuleSpec`);
:func:`make_rules` compiles them once. During evaluation the engine tags each
failing example with the first rule that matches it (:func:`first_match`, in
file order) and adds the rule's message to the example's feedback, so every
optimizer sees it; PROMST buckets failures by that tag. A rule matches when all
its matchers hold: over the output (regex found, regex absent, length), over the
example's error, or over its trace (a node raised, a node ran too often, too
many model calls). Output matchers never match an example that has no output.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt.task.spec import FeedbackRuleSpec

if TYPE_CHECKING:
    from promptopt.graph import Trace
    from promptopt.task.results import ExampleResult

__all__ = ["FeedbackRule", "first_match", "make_rules", "tagged"]

Check = Callable[[str | None, str | None, "Trace | None"], bool]


@dataclass(frozen=True)
class FeedbackRule:
    """A compiled rule: its name (the error type), its message and its checks (all must hold)."""

    name: str
    message: str
    checks: tuple[Check, ...]

    def matches(self, output: str | None, error: str | None, trace: Trace | None) -> bool:
        return all(check(output, error, trace) for check in self.checks)


def _nodes(trace: Trace | None) -> list[Any]:
    return [n for n in trace.nodes if n.kind == "op"] if trace is not None else []


def _output_matches(pattern: str, *, found: bool) -> Check:
    compiled = re.compile(pattern)
    return lambda output, _e, _t: output is not None and bool(compiled.search(output)) is found


def _longer_than(limit: int) -> Check:
    return lambda output, _e, _t: output is not None and len(output) > limit


def _raised(wanted: bool) -> Check:
    return lambda _o, error, _t: (error is not None) is wanted


def _node_raised(name: str) -> Check:
    return lambda _o, _e, trace: any(n.name == name and n.error for n in _nodes(trace))


def _node_calls_over(name: str, limit: int) -> Check:
    return lambda _o, _e, trace: Counter(n.name for n in _nodes(trace))[name] > limit


def _llm_calls_over(limit: int) -> Check:
    return lambda _o, _e, trace: sum(len(n.llm_calls) for n in _nodes(trace)) > limit


def make_rules(specs: Sequence[FeedbackRuleSpec]) -> tuple[FeedbackRule, ...]:
    """The task's rules, compiled, in file order."""
    rules = []
    for spec in specs:
        checks: list[Check] = []
        if spec.output_matches is not None:
            checks.append(_output_matches(spec.output_matches, found=True))
        if spec.output_lacks is not None:
            checks.append(_output_matches(spec.output_lacks, found=False))
        if spec.output_longer_than is not None:
            checks.append(_longer_than(spec.output_longer_than))
        if spec.raised is not None:
            checks.append(_raised(spec.raised))
        if spec.node_raised is not None:
            checks.append(_node_raised(spec.node_raised))
        checks += [_node_calls_over(node, n) for node, n in spec.node_calls_over.items()]
        if spec.llm_calls_over is not None:
            checks.append(_llm_calls_over(spec.llm_calls_over))
        rules.append(FeedbackRule(spec.name, spec.message.strip(), tuple(checks)))
    return tuple(rules)


def first_match(
    rules: Sequence[FeedbackRule], *, output: str | None, error: str | None, trace: Trace | None
) -> FeedbackRule | None:
    """The first rule (in order) that matches this example, or None."""
    return next((rule for rule in rules if rule.matches(output, error, trace)), None)


def tagged(result: ExampleResult, rules: Sequence[FeedbackRule]) -> ExampleResult:
    """``result`` with the first rule its failure matches (``rule``) and that rule's message
    added to its feedback; a passing example, or one no rule matches, is returned as is."""
    if not rules or not result.failed:
        return result
    rule = first_match(rules, output=result.output, error=result.error, trace=result.trace)
    if rule is None:
        return result
    told = f"{rule.name}: {rule.message}"
    feedback = f"{result.score.feedback}; {told}" if result.score.feedback else told
    score = dataclasses.replace(result.score, feedback=feedback)
    return dataclasses.replace(result, score=score, rule=rule.name)
