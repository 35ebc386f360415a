"""Metrics: a table of predictions, targets and expected scores per kind, and the judge."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from promptopt.errors import ConfigError, DataError
from promptopt.task import Example, MetricSpec, Score, make_metric, normalize_text, parse_verdict
from promptopt.task.metrics import JUDGE_SYSTEM, Metric, f1_score, first_number

FIXTURES = Path(__file__).parent / "fixtures"


def _example(target: Any, **inputs: Any) -> Example:
    return Example("val-0", inputs or {"text": "a review"}, target)


async def _score(spec: dict[str, Any], prediction: str, target: Any, **kw: Any) -> Score:
    metric = make_metric(MetricSpec.model_validate(spec), **kw)
    return await metric.ascore(prediction, _example(target))


@pytest.mark.parametrize(
    ("spec", "prediction", "target", "value", "valid"),
    [
        ({"kind": "exact"}, "positive", "positive", 1.0, True),
        ({"kind": "exact"}, "  Positive. ", "positive", 1.0, True),
        ({"kind": "exact"}, '"Positive!"', "positive", 1.0, True),
        ({"kind": "exact"}, "negative", "positive", 0.0, True),
        ({"kind": "exact", "normalize": False}, "Positive", "positive", 0.0, True),
        ({"kind": "exact", "normalize": False}, " positive\n", "positive", 1.0, True),
        ({"kind": "exact"}, "Paris", ["paris", "Paris, France"], 1.0, True),
        ({"kind": "exact"}, "42", 42, 1.0, True),
        ({"kind": "contains"}, "I think it is POSITIVE overall", "positive", 1.0, True),
        ({"kind": "contains"}, "negative", "positive", 0.0, True),
        ({"kind": "regex", "pattern": r"answer:\s*(\w+)"}, "so... answer: Blue", "blue", 1.0, True),
        ({"kind": "regex", "pattern": r"answer:\s*(\w+)"}, "answer: red", "blue", 0.0, True),
        ({"kind": "regex", "pattern": r"answer:\s*(\w+)"}, "I don't know", "blue", 0.0, False),
        ({"kind": "regex", "pattern": r"\d+"}, "it is 12 apples", "12", 1.0, True),
        ({"kind": "numeric"}, "The answer is 1,234.", "1234", 1.0, True),
        ({"kind": "numeric"}, "-3.5 degrees", -3.5, 1.0, True),
        ({"kind": "numeric"}, "about 3.1", "3.14159", 0.0, True),
        ({"kind": "numeric", "tolerance": 0.1}, "about 3.1", "3.14159", 1.0, True),
        ({"kind": "numeric"}, "no idea", "7", 0.0, False),
        ({"kind": "numeric"}, "2.5e3 m", 2500, 1.0, True),
        ({"kind": "f1"}, "the cat sat", "cat sat", 1.0, True),
        ({"kind": "f1"}, "a black cat", "the white cat", 0.5, True),
        ({"kind": "f1"}, "dog", "cat", 0.0, True),
        ({"kind": "f1"}, "dog", ["cat", "dog"], 1.0, True),
    ],
)
async def test_metric_table(
    spec: dict[str, Any], prediction: str, target: Any, value: float, valid: bool
) -> None:
    score = await _score(spec, prediction, target)
    assert score.value == pytest.approx(value)
    assert score.valid is valid
    assert (score.feedback == "") is (value == 1.0)


async def test_wrong_answer_feedback() -> None:
    score = await _score({"kind": "exact"}, "negative", "positive")
    assert score.feedback == "expected 'positive', got 'negative'"
    score = await _score({"kind": "numeric"}, "41", "42")
    assert score.feedback == "expected 42, got 41"


@pytest.mark.parametrize(
    ("prediction", "value", "valid"),
    [("positive", 1.0, True), ("Negative.", 0.0, True), ("neutral", 0.0, False), ("", 0.0, False)],
)
async def test_choices_make_other_outputs_invalid(
    prediction: str, value: float, valid: bool
) -> None:
    score = await _score(
        {"kind": "exact"}, prediction, "positive", choices=["positive", "negative"]
    )
    assert (score.value, score.valid) == (value, valid)
    if not valid:
        assert score.feedback.startswith("expected one of 'positive', 'negative'")


async def test_numeric_target_must_be_a_number() -> None:
    with pytest.raises(DataError, match="'val-0'"):
        await _score({"kind": "numeric"}, "3", "three")


@pytest.mark.parametrize(
    ("text", "number"),
    [("x = -1,234.5!", -1234.5), ("3e-2", 0.03), ("costs .5", 0.5), ("none", None), ("v2", 2.0)],
)
def test_first_number(text: str, number: float | None) -> None:
    assert first_number(text) == number


def test_normalize_text() -> None:
    assert normalize_text("  The   ANSWER:\n 'Yes'. ") == "the answer: 'yes"
    assert normalize_text("\u201cPositive\u201d") == "positive"


def test_f1_of_empty_strings() -> None:
    assert f1_score("", "") == 1.0
    assert f1_score("the", "cat") == 0.0


# ---------------------------------------------------------------- python metric


async def test_python_metric_from_the_task_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_ref puts the folder first
    spec = MetricSpec(kind="python", function="fixture_task_metrics:starts_with_target")
    metric = make_metric(spec, base_dir=FIXTURES)
    assert metric.name == "python"
    assert (await metric.ascore("Positive, clearly", _example("positive"))).value == 1.0
    assert (await metric.ascore("negative", _example("positive"))).value == 0.0
    assert sys.path[0] == str(FIXTURES.resolve())


def _half(prediction: str, example: Example) -> float:
    return 0.5


async def _as_score(prediction: str, example: Example) -> Score:
    return Score(0.25, feedback="too long")


def _too_big(prediction: str, example: Example) -> float:
    return 3.0


async def test_python_metric_results() -> None:
    half = make_metric(MetricSpec(kind="python", function=f"{__name__}:_half"))
    assert await half.ascore("x", _example("y")) == Score(0.5)
    scored = make_metric(MetricSpec(kind="python", function=f"{__name__}:_as_score"))
    assert await scored.ascore("x", _example("y")) == Score(0.25, feedback="too long")
    too_big = make_metric(MetricSpec(kind="python", function=f"{__name__}:_too_big"))
    with pytest.raises(ConfigError, match="expected a float in"):
        await too_big.ascore("x", _example("y"))


def test_python_metric_that_cannot_be_imported() -> None:
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        make_metric(MetricSpec(kind="python", function="no_such_module_xyz:f"))
    with pytest.raises(ConfigError, match="no attribute 'nope'"):
        make_metric(MetricSpec(kind="python", function=f"{__name__}:nope"))


# ---------------------------------------------------------------- judge


class FakeJudge:
    """Any object with ``async achat`` will do; this one records what it was asked."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def achat(self, prompt: str, **fields: Any) -> str:
        self.calls.append((prompt, fields))
        return self.reply


@pytest.mark.parametrize(
    ("reply", "value", "valid"),
    [
        ("score: 10\nExactly right.", 1.0, True),
        ("Score: 7 - mostly right", 0.7, True),
        ("**Score:** 3/5", 0.6, True),
        ("I'd give it 4 out of 10.", 0.4, True),
        ("score = 0.8", 0.8, True),
        ("Yes, the answer is correct.", 1.0, True),
        ("No. It is incorrect.", 0.0, True),
        ("Incorrect: it says blue.", 0.0, True),
        ("hmm, hard to say", 0.0, False),
        ("score: 42", 0.0, False),
    ],
)
async def test_judge_parses_verdicts(reply: str, value: float, valid: bool) -> None:
    judge = FakeJudge(reply)
    metric = make_metric(MetricSpec(kind="judge", rubric="Names the capital city."))
    score = await metric.ascore(
        "Paris", Example("val-3", {"question": "Capital of France?"}, "Paris"), llm=judge
    )
    assert score.value == pytest.approx(value)
    assert score.valid is valid
    prompt, fields = judge.calls[0]
    assert "Names the capital city." in prompt
    assert "question: Capital of France?" in prompt
    assert "Reference answer: Paris" in prompt and "Answer to grade: Paris" in prompt
    assert fields == {"system": JUDGE_SYSTEM, "tag": "judge"}
    if value < 1.0:
        assert score.feedback


async def test_judge_needs_an_llm() -> None:
    metric = make_metric(MetricSpec(kind="judge"))
    with pytest.raises(ConfigError, match="needs an llm"):
        await metric.ascore("x", _example("y"))


def test_parse_verdict_directly() -> None:
    assert parse_verdict("rating: 9") == pytest.approx(0.9)
    assert parse_verdict("") is None


def test_metrics_satisfy_the_protocol() -> None:
    for spec in [MetricSpec(kind="exact"), MetricSpec(kind="f1"), MetricSpec(kind="judge")]:
        metric = make_metric(spec, choices=["a"])
        assert isinstance(metric, Metric)
        assert metric.name == spec.kind


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_score_must_lie_in_the_unit_interval(value: float) -> None:
    with pytest.raises(ValueError):
        Score(value)


async def test_judge_through_the_real_client_and_a_scripted_fake() -> None:
    from promptopt.llm.fakes import scripted_llm

    llm = scripted_llm("score: 6\nHalf right.")
    metric = make_metric(MetricSpec(kind="judge", rubric="Polite and correct."))
    score = await metric.ascore("Paris.", _example("Paris", question="Capital of France?"), llm=llm)
    assert score == Score(0.6, feedback="judge: score: 6 Half right.")
    request = llm.backend.requests[0]  # type: ignore[attr-defined]
    assert request.tag == "judge"
    assert request.messages[0].role == "system" and request.messages[0].content == JUDGE_SYSTEM
