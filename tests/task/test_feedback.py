"""Feedback rules: declared in task.yaml, checked once, matched over outputs and traces."""

from __future__ import annotations

import contextlib

import pytest
from pydantic import ValidationError

from promptopt import node, trace
from promptopt.optimizers.base import ExampleResult
from promptopt.task.data import Example
from promptopt.task.feedback import first_match, make_rules, tagged
from promptopt.task.loader import explain_validation_error
from promptopt.task.metrics import Score
from promptopt.task.spec import FeedbackRuleSpec, TaskSpec


def _task(feedback: list[dict]) -> dict:
    return {
        "name": "t",
        "program": {"user": "Q: {q}"},
        "data": {"path": "d.jsonl", "inputs": ["q"], "target": "a", "split": {"train": 1}},
        "metric": {"kind": "exact"},
        "feedback": feedback,
    }


def _rules(*specs: dict):
    return make_rules([FeedbackRuleSpec.model_validate(s) for s in specs])


@pytest.mark.parametrize(
    ("rule", "field", "reason"),
    [
        ({"name": "f", "message": "m"}, "feedback[0].name", "has no matcher"),
        ({"name": "f", "message": " ", "raised": True}, "feedback[0].message", "needs a message"),
        ({"name": "other", "message": "m", "raised": True}, "feedback[0].name", "no rule"),
        ({"name": "F", "message": "m", "raised": True}, "feedback[0].name", "lower-case"),
        ({"name": "f", "message": "m", "output_matches": "("}, "feedback[0].output_matches",
         "does not compile"),
        ({"name": "f", "message": "m", "colour": 1}, "feedback[0].colour", "unknown key"),
    ],
)  # fmt: skip
def test_bad_rules_name_their_field(rule, field, reason):
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(_task([rule]))
    where, why = explain_validation_error(info.value, model=TaskSpec)
    assert where == field and reason in why


def test_a_rule_name_may_appear_once():
    rule = {"name": "f", "message": "m", "raised": True}
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(_task([rule, rule]))
    assert explain_validation_error(info.value, model=TaskSpec) == (
        "feedback[1].name",
        "rule 'f' is declared twice",
    )


def test_output_matchers_and_first_match_in_order():
    rules = _rules(
        {"name": "empty", "message": "say something", "output_lacks": r"\w"},
        {"name": "chatty", "message": "one word", "output_longer_than": 12},
        {"name": "shouting", "message": "no capitals", "output_matches": "^[A-Z]+$"},
        {"name": "crash", "message": "it raised", "raised": True},
    )

    def name(output, error=None):
        rule = first_match(rules, output=output, error=error, trace=None)
        return rule.name if rule else None

    assert name("  ") == "empty"
    assert name("it is billing, I think") == "chatty"
    assert name("BILLING") == "shouting"
    assert name("BILLING AND SHIPPING TOO") == "chatty"  # the first rule that matches wins
    assert name("billing") is None
    assert name(None, error="ValueError: boom") == "crash"  # output rules skip a missing output


@node
def step(x):
    return x + 1


@node
def explode(x):
    raise ValueError("boom")


def test_trace_matchers_count_nodes_calls_and_errors():
    rules = _rules(
        {"name": "loop", "message": "stuck", "node_calls_over": {"step": 2}},
        {"name": "broke", "message": "explode raised", "node_raised": "explode"},
        {"name": "chatty", "message": "too many calls", "llm_calls_over": 0},
    )
    with trace() as looping:
        step(step(step(0)))
    with trace() as twice:
        step(step(0))
    with trace() as broken, contextlib.suppress(ValueError):
        explode(step(0))
    match = [first_match(rules, output="x", error=None, trace=t) for t in (looping, twice, broken)]
    assert [r.name if r else None for r in match] == ["loop", None, "broke"]


def test_tagging_adds_the_message_to_a_failure_only():
    rules = _rules({"name": "chatty", "message": "Answer with one word.", "output_matches": " "})
    example = Example("val-0", {"q": "?"}, "billing")
    wrong = ExampleResult(example, "it is billing", Score(0.0, feedback="expected 'billing'"))
    right = ExampleResult(example, "billing now", Score(1.0))
    got = tagged(wrong, rules)
    assert got.rule == "chatty"
    assert got.score.feedback == "expected 'billing'; chatty: Answer with one word."
    assert tagged(right, rules) is right
