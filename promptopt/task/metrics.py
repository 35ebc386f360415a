"""Metrics: score one prediction against one example.

Every metric is an object with a ``name`` and ``async ascore(prediction,
example, *, llm=None) -> Score``; :func:`make_metric` builds one from a
:class:`~promptopt.task.spec.MetricSpec` through a table of kinds. A
:class:`Score` is a value in [0, 1], ``valid=False`` when the output could not
be parsed at all (regex did not match, no number, not one of ``choices``, the
judge's verdict was unreadable), and feedback text an optimizer can show an LLM.

A target may be a list of acceptable answers: exact, contains, regex and f1 take
the best of them.
"""

from __future__ import annotations

import inspect
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from promptopt.errors import ConfigError, DataError
from promptopt.task.data import Example
from promptopt.task.imports import import_ref
from promptopt.task.spec import MetricSpec

__all__ = [
    "DEFAULT_TOLERANCE",
    "JUDGE_SYSTEM",
    "Metric",
    "Score",
    "f1_score",
    "first_number",
    "make_metric",
    "normalize_text",
    "parse_verdict",
]

DEFAULT_TOLERANCE = 1e-6
_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026"
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_ARTICLES = frozenset({"a", "an", "the"})


@dataclass(frozen=True, slots=True)
class Score:
    """One metric result: ``value`` in [0, 1]; ``valid`` is False when the output was unparsable."""

    value: float
    valid: bool = True
    feedback: str = ""

    def __post_init__(self) -> None:
        if not (0.0 <= self.value <= 1.0) or math.isnan(self.value):
            raise ValueError(f"a score must lie in [0, 1], got {self.value!r}")


@runtime_checkable
class Metric(Protocol):
    @property
    def name(self) -> str: ...  # read-only: metrics name themselves as a class attribute

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score: ...


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding punctuation and quotes."""
    return " ".join(text.lower().split()).strip(_PUNCT + " ")


def _targets(example: Example) -> list[str]:
    target = example.target
    values = target if isinstance(target, list | tuple) else [target]
    return ["" if value is None else str(value) for value in values]


def _wrong(expected: str, got: str) -> str:
    return f"expected {expected!r}, got {got!r}"


def _best(prediction: str, example: Example, compare: Callable[[str, str], float]) -> Score:
    targets = _targets(example)
    value = max(compare(prediction, target) for target in targets)
    return Score(value, feedback="" if value == 1.0 else _wrong(targets[0], prediction))


# ---------------------------------------------------------------- kinds


@dataclass(frozen=True)
class ExactMatch:
    name: ClassVar[str] = "exact"
    normalize: bool = True

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        norm = normalize_text if self.normalize else str.strip
        return _best(prediction, example, lambda p, t: float(norm(p) == norm(t)))


@dataclass(frozen=True)
class Contains:
    name: ClassVar[str] = "contains"
    normalize: bool = True

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        norm = normalize_text if self.normalize else str
        return _best(prediction, example, lambda p, t: float(norm(t) in norm(p)))


@dataclass(frozen=True)
class RegexMatch:
    """Group 1 of the first match (or the whole match) is compared exactly to the target."""

    name: ClassVar[str] = "regex"
    pattern: re.Pattern[str]
    normalize: bool = True

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        found = self.pattern.search(prediction)
        if found is None:
            return Score(
                0.0,
                valid=False,
                feedback=f"no match for {self.pattern.pattern!r} in {prediction!r}",
            )
        answer = found.group(1) if self.pattern.groups else found.group(0)
        answer = answer or ""
        norm = normalize_text if self.normalize else str.strip
        return _best(answer, example, lambda p, t: float(norm(p) == norm(t)))


def first_number(text: str) -> float | None:
    """The first number in ``text`` (``-1,234.5``, ``3e-2``, ``.5``), or None."""
    found = _NUMBER.search(text)
    return None if found is None else float(found.group(0).replace(",", ""))


@dataclass(frozen=True)
class Numeric:
    name: ClassVar[str] = "numeric"
    tolerance: float = DEFAULT_TOLERANCE

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        target = first_number(str(example.target)) if example.target is not None else None
        if target is None:
            raise DataError(f"example {example.id!r}: target {example.target!r} is not a number")
        got = first_number(prediction)
        if got is None:
            return Score(
                0.0, valid=False, feedback=f"no number in {prediction!r}; expected {target:g}"
            )
        if abs(got - target) <= self.tolerance:
            return Score(1.0)
        return Score(0.0, feedback=f"expected {target:g}, got {got:g}")


def _f1_tokens(text: str) -> list[str]:
    cleaned = text.lower().translate(str.maketrans(_PUNCT, " " * len(_PUNCT)))
    return [token for token in cleaned.split() if token not in _ARTICLES]


def f1_score(prediction: str, target: str) -> float:
    """Token-level F1 (lower-cased, punctuation and English articles removed)."""
    got, want = _f1_tokens(prediction), _f1_tokens(target)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class TokenF1:
    name: ClassVar[str] = "f1"

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        return _best(prediction, example, f1_score)


@dataclass(frozen=True)
class PythonMetric:
    """A user function ``(prediction, example) -> float | Score`` (may be async)."""

    name: ClassVar[str] = "python"
    function: Callable[..., Any]
    ref: str = ""

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        result = self.function(prediction, example)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Score):
            return result
        if isinstance(result, bool | int | float) and 0.0 <= float(result) <= 1.0:
            return Score(float(result))
        raise ConfigError(
            f"metric function {self.ref!r} returned {result!r}; expected a float in [0, 1] or a Score"
        )


# ---------------------------------------------------------------- judge

JUDGE_SYSTEM = (
    "You grade answers. Compare the answer with the rubric and the reference answer. "
    "Reply with 'score: N' on the first line, N from 0 (wrong) to 10 (fully correct), "
    "then one short sentence saying why."
)
_SCORE_LINE = re.compile(
    r"(?:score|rating|grade)\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.I
)
_FRACTION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+)", re.I)
_VERDICT_WORDS = {
    "yes": 1.0,
    "correct": 1.0,
    "pass": 1.0,
    "no": 0.0,
    "incorrect": 0.0,
    "wrong": 0.0,
    "fail": 0.0,
}


def parse_verdict(text: str) -> float | None:
    """A judge's reply as a value in [0, 1]: ``score: 7`` (of 10), ``4/5``, or yes/no; else None."""
    found = _SCORE_LINE.search(text) or _FRACTION.search(text)
    if found is not None:
        number = float(found.group(1))
        scale = (
            float(found.group(2))
            if found.group(2)
            else (1.0 if "." in found.group(1) and number <= 1 else 10.0)
        )
        if scale > 0 and 0 <= number <= scale:
            return number / scale
        return None
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _VERDICT_WORDS:
            return _VERDICT_WORDS[word]
    return None


@dataclass(frozen=True)
class Judge:
    """Asks the judge LLM (``await llm.achat(prompt, system=...)``) to grade the answer."""

    name: ClassVar[str] = "judge"
    rubric: str = ""

    def prompt(self, prediction: str, example: Example) -> str:
        fields = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
        parts = [
            f"Rubric: {self.rubric or 'The answer is correct and complete.'}",
            f"Input:\n{fields}",
        ]
        if example.target is not None:
            parts.append(f"Reference answer: {example.target}")
        parts.append(f"Answer to grade: {prediction}")
        return "\n\n".join(parts)

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        if llm is None:
            raise ConfigError("metric 'judge' needs an llm (models.judge); got llm=None")
        reply = await llm.achat(self.prompt(prediction, example), system=JUDGE_SYSTEM, tag="judge")
        value = parse_verdict(reply)
        said = " ".join(reply.split())[:300]
        if value is None:
            return Score(0.0, valid=False, feedback=f"unreadable judge verdict: {said!r}")
        return Score(value, feedback="" if value == 1.0 else f"judge: {said}")


# ---------------------------------------------------------------- choices and the table


@dataclass(frozen=True)
class ChoiceGuard:
    """Marks an output that is none of ``choices`` (after normalisation) invalid; else defers."""

    inner: Metric
    choices: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.inner.name

    async def ascore(self, prediction: str, example: Example, *, llm: Any = None) -> Score:
        if normalize_text(prediction) not in {normalize_text(choice) for choice in self.choices}:
            listed = ", ".join(repr(choice) for choice in self.choices)
            return Score(0.0, valid=False, feedback=f"expected one of {listed}, got {prediction!r}")
        return await self.inner.ascore(prediction, example, llm=llm)


def _python(spec: MetricSpec, base_dir: Path | None) -> Metric:
    assert spec.function is not None  # guaranteed by MetricSpec
    function = import_ref(spec.function, base_dir=base_dir, what="metric function")
    if not callable(function):
        raise ConfigError(f"metric function {spec.function!r} is not callable")
    return PythonMetric(function, spec.function)


_KINDS: dict[str, Callable[[MetricSpec, Path | None], Metric]] = {
    "exact": lambda spec, _: ExactMatch(spec.normalize),
    "contains": lambda spec, _: Contains(spec.normalize),
    "regex": lambda spec, _: RegexMatch(re.compile(spec.pattern or ""), spec.normalize),
    "numeric": lambda spec, _: Numeric(
        DEFAULT_TOLERANCE if spec.tolerance is None else spec.tolerance
    ),
    "f1": lambda spec, _: TokenF1(),
    "python": _python,
    "judge": lambda spec, _: Judge(spec.rubric or ""),
}


def make_metric(
    spec: MetricSpec, *, choices: Sequence[str] = (), base_dir: str | Path | None = None
) -> Metric:
    """The metric a spec describes; ``choices`` (``program.choices``) makes other outputs invalid.

    ``base_dir`` is the task's folder, put on sys.path to import a ``python`` metric.
    """
    metric = _KINDS[spec.kind](spec, None if base_dir is None else Path(base_dir))
    return ChoiceGuard(metric, tuple(choices)) if choices else metric
