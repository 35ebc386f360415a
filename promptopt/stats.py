"""Is the best prompt better than the seed, and than answering the commonest label?

Pure functions over per-example scores, and :class:`Comparison`, the numbers every
summary prints about a run's best against its seed on test (the run summary,
``promptopt show``, the HTML report and ``OptimizeResult.comparison``):

- :func:`binomial_tail` and :func:`mcnemar_exact`: the exact sign test on the
  examples the two scored differently (McNemar's test, exact, for 0/1 scores;
  for graded scores such as F1 it is the sign test on who scored higher);
- :func:`bootstrap_gain_interval`: a percentile bootstrap interval of the mean
  per-example gain, resampling examples with a seeded ``random.Random``;
- :func:`majority_class`: the commonest target and its share, which is the
  accuracy of always answering it; reported only for labels (:func:`is_labelled`):
  a task with ``choices``, or targets of at most :data:`MAX_LABELS` distinct scalar
  values. Free-text targets get no majority class (always giving the commonest
  reference answer is not a strategy anyone would compare against), but still
  get the paired counts, the p-value and the interval, which need only scores.

Imports nothing from the project.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LARGE_DROP",
    "MAX_LABELS",
    "SIGNIFICANCE",
    "Comparison",
    "binomial_tail",
    "bootstrap_gain_interval",
    "compare",
    "is_labelled",
    "majority_class",
    "mcnemar_exact",
    "p_text",
    "paired_counts",
]

MAX_LABELS = 10  # as many labels as the exemplar optimizer still balances
SIGNIFICANCE = 0.05
LARGE_DROP = 0.1  # a validation-to-test drop at least this large is named in the verdicts
_SCALARS = (str, int, float, bool)


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact: an integer sum of binomial coefficients
    over ``2**n``, divided once (correctly rounded, however large ``n``)."""
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def mcnemar_exact(wins: int, losses: int) -> float:
    """The two-sided exact McNemar p-value of ``wins`` against ``losses`` (the discordant
    pairs): ``min(1, 2 * P(X <= min(wins, losses)))``, X ~ Binomial(wins + losses, 1/2);
    1.0 when there are none."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be at least 0, got {wins} and {losses}")
    if wins + losses == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(min(wins, losses), wins + losses))


def paired_counts(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, int]:
    """(wins, losses, ties) of ``b`` over ``a``, row by row."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} and {len(b)}")
    wins = sum(1 for x, y in zip(a, b, strict=True) if y > x)
    losses = sum(1 for x, y in zip(a, b, strict=True) if y < x)
    return wins, losses, len(a) - wins - losses


def bootstrap_gain_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seed: int = 0,
    resamples: int = 2000,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``b - a`` over paired rows.

    Each of ``resamples`` draws takes ``len(a)`` rows with replacement
    (``random.Random(seed).choices``) and averages their gains; the interval is
    the draws' sorted means at 0-based positions ``j`` and ``resamples - 1 - j``,
    ``j = floor(resamples * (1 - level) / 2)``. The same seed gives the same interval.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("no paired rows to resample")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    gains = [y - x for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(gains)
    means = sorted(sum(rng.choices(gains, k=n)) / n for _ in range(resamples))
    j = math.floor(resamples * (1.0 - level) / 2.0 + 1e-9)  # 1 - 0.9 is 0.0999...: not 1 short
    return means[j], means[resamples - 1 - j]


def majority_class(targets: Iterable[Hashable | None]) -> tuple[Hashable, float] | None:
    """The commonest target and its share of the targets that are not None (None if none is).

    A tie goes to the label whose ``str`` sorts first (then its type's name), so the
    answer never depends on the order of the rows.
    """
    counts = Counter(t for t in targets if t is not None)
    if not counts:
        return None
    label, count = min(counts.items(), key=lambda kv: (-kv[1], str(kv[0]), type(kv[0]).__name__))
    return label, count / sum(counts.values())


def is_labelled(targets: Iterable[Any], *, choices: Sequence[str] = ()) -> bool:
    """True when the targets are labels: every one that is given is a scalar (not a list of
    acceptable answers), at least one is given, and the task declares ``choices`` or
    they take at most :data:`MAX_LABELS` distinct values."""
    given = [t for t in targets if t is not None]
    if not given or not all(isinstance(t, _SCALARS) for t in given):
        return False
    return bool(choices) or len(set(given)) <= MAX_LABELS


def p_text(p: float) -> str:
    """A p-value for people: three decimals, or ``< 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The best against the seed on test, and both against the majority class.

    ``majority_val``/``majority_test``: the commonest label of that split and its
    share (the accuracy of always answering it), None for free-text targets;
    ``wins``/``losses``/``ties``: test examples (scored by both, paired by id) on
    which the best scored higher, lower, the same; ``p_value``: exact McNemar
    (:func:`mcnemar_exact`); ``gain``: the best's mean score minus the seed's on
    those examples, ``interval`` its 95% bootstrap interval (None without rows);
    ``val_to_test_drop``: the best's validation score minus its test score
    (positive: it did worse on test, as selection on a small split predicts).
    """

    best_val: float | None
    best_test: float | None
    majority_val: tuple[Hashable, float] | None
    majority_test: tuple[Hashable, float] | None
    wins: int
    losses: int
    ties: int
    p_value: float
    gain: float
    interval: tuple[float, float] | None
    val_to_test_drop: float | None
    label_notes: tuple[str, ...] = ()

    @property
    def paired(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    @property
    def beats_majority(self) -> bool | None:
        """Whether the best's test score exceeds the majority class's (None: no majority)."""
        if self.majority_test is None or self.best_test is None:
            return None
        return self.best_test > self.majority_test[1] + 1e-9  # 7 / 10 may sum to 0.70...01

    def lines(self) -> list[str]:
        """The numbers, one line each: majority class, best against seed, the drop."""
        out = []
        if self.majority_val is not None or self.majority_test is not None:
            parts = [f"{split} {_majority(m)}" for split, m in
                     (("validation", self.majority_val), ("test", self.majority_test))]  # fmt: skip
            out.append(f"majority class (always its label): {', '.join(parts)}")
        interval = (
            "-" if self.interval is None
            else f"{self.interval[0]:+.3f} to {self.interval[1]:+.3f}"
        )  # fmt: skip
        out.append(
            f"best vs seed on test ({self.paired} examples): {self.wins} wins, "
            f"{self.losses} losses, {p_text(self.p_value)} (McNemar exact), "
            f"gain {self.gain:+.3f} (95% interval {interval})"
        )
        if self.val_to_test_drop is not None:
            out.append(
                f"validation to test, best: {_score(self.best_val)} -> {_score(self.best_test)} "
                f"(drop {self.val_to_test_drop:+.3f})"
            )
        return out

    def verdicts(self) -> list[str]:
        """What the numbers say, in words: a best no better than the majority class, a gain
        that is not significant at 0.05, and a large validation-to-test drop; then the
        ``label_notes`` the caller read in the best's texts (``promptopt.label_lists``)."""
        out = []
        if self.beats_majority is False and self.majority_test is not None:
            out.append(
                f"the best does not beat the majority class ({_score(self.best_test)} vs "
                f"{self.majority_test[1]:.3f} on test, always answering {self.majority_test[0]!r})"
            )
        if self.wins + self.losses == 0:
            out.append("the gain over the seed is not significant: the best and the seed "
                       "scored alike on every test example")  # fmt: skip
        elif not self.significant:
            out.append(
                f"the gain over the seed is not significant ({p_text(self.p_value)}, "
                f"McNemar exact, at {SIGNIFICANCE})"
            )
        elif self.losses > self.wins:
            out.append(f"the best is significantly worse than the seed on test "
                       f"({p_text(self.p_value)}, McNemar exact)")  # fmt: skip
        if self.val_to_test_drop is not None and self.val_to_test_drop >= LARGE_DROP:
            out.append(
                f"the best dropped {self.val_to_test_drop:.3f} from validation to test: "
                "its validation score, chosen on a small split, overstates it"
            )
        return [*out, *self.label_notes]


def compare(
    seed_scores: Mapping[str, float],
    best_scores: Mapping[str, float],
    *,
    val_targets: Sequence[Any],
    test_targets: Sequence[Any],
    best_val: float | None,
    choices: Sequence[str] = (),
    bootstrap_seed: int = 0,
    label_notes: Sequence[str] = (),
) -> Comparison:
    """The :class:`Comparison` of per-example test scores keyed by example id.

    Pairs are the ids both scored, in sorted order, and the bootstrap's seed is 0
    unless given: the summary of a run, ``promptopt show`` and its report, which
    read the same scores from the run store, draw the same interval. The best's
    test score is the mean of all its scores.
    The majority class is given per split only when both splits' targets are
    labels (:func:`is_labelled`).
    """
    ids = sorted(seed_scores.keys() & best_scores.keys())
    a = [float(seed_scores[i]) for i in ids]
    b = [float(best_scores[i]) for i in ids]
    wins, losses, ties = paired_counts(a, b)
    best_test = sum(best_scores.values()) / len(best_scores) if best_scores else None
    labelled = is_labelled([*val_targets, *test_targets], choices=choices)
    return Comparison(
        best_val=best_val,
        best_test=best_test,
        majority_val=majority_class(val_targets) if labelled else None,
        majority_test=majority_class(test_targets) if labelled else None,
        wins=wins,
        losses=losses,
        ties=ties,
        p_value=mcnemar_exact(wins, losses),
        gain=(sum(b) - sum(a)) / len(ids) if ids else 0.0,
        interval=bootstrap_gain_interval(a, b, seed=bootstrap_seed) if ids else None,
        val_to_test_drop=None if best_val is None or best_test is None else best_val - best_test,
        label_notes=tuple(label_notes),
    )


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"  # as report.numbers.score_text


def _majority(majority: tuple[Hashable, float] | None) -> str:
    return "-" if majority is None else f"{majority[1]:.3f} ({majority[0]!r})"
