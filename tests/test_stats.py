"""The statistics of every summary, against values computed by hand."""

from __future__ import annotations

import math
import random

import pytest

from promptopt.stats import (
    Comparison,
    binomial_tail,
    bootstrap_gain_interval,
    compare,
    is_labelled,
    majority_class,
    mcnemar_exact,
    p_text,
    paired_counts,
)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 1, 0.5),
        (1, 2, 0.75),  # (1 + 2) / 4
        (2, 4, 0.6875),  # (1 + 4 + 6) / 16
        (1, 10, 11 / 1024),
        (-1, 3, 0.0),
        (3, 3, 1.0),
        (7, 3, 1.0),
        (0, 0, 1.0),
    ],
)
def test_binomial_tail_small_cases(k: int, n: int, expected: float) -> None:
    assert binomial_tail(k, n) == expected


def test_binomial_tail_is_exact_for_thousands_of_trials() -> None:
    assert binomial_tail(1000, 2001) == 0.5  # P(X <= 1000) = P(X >= 1001) by symmetry
    assert binomial_tail(0, 3000) == 0.0  # 2**-3000 is below the smallest float: no overflow
    assert binomial_tail(2999, 3000) == 1.0
    with pytest.raises(ValueError):
        binomial_tail(0, -1)


@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [
        (1, 9, 0.021484375),  # 2 * (C(10,0) + C(10,1)) / 2**10 = 22 / 1024
        (9, 1, 0.021484375),
        (10, 0, 0.001953125),  # 2 / 1024
        (0, 5, 0.0625),  # 2 / 32
        (3, 3, 1.0),  # 2 * 42 / 64 = 1.3125, capped at 1
        (2, 3, 1.0),  # 2 * (1 + 5 + 10) / 32 = 1
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_on_known_tables(wins: int, losses: int, expected: float) -> None:
    assert mcnemar_exact(wins, losses) == expected


def test_paired_counts() -> None:
    seed = [1.0, 0.0, 0.0, 1.0, 0.5]
    best = [1.0, 1.0, 0.0, 0.0, 0.75]
    assert paired_counts(seed, best) == (2, 1, 2)
    with pytest.raises(ValueError):
        paired_counts([1.0], [])


def test_the_bootstrap_of_equal_gains_is_that_gain() -> None:
    assert bootstrap_gain_interval([0.0] * 7, [1.0] * 7) == (1.0, 1.0)
    assert bootstrap_gain_interval([1.0, 0.0], [1.0, 0.0], seed=3) == (0.0, 0.0)


def test_the_bootstrap_of_two_rows_spans_their_gains() -> None:
    # gains 0 and 1: a resample's mean is 0 with chance 1/4, and 2000 draws hold
    # far more than the 50 zeros (and 50 ones) the 2.5% and 97.5% positions need
    assert bootstrap_gain_interval([1.0, 0.0], [1.0, 1.0]) == (0.0, 1.0)


def test_the_bootstrap_is_the_percentile_of_seeded_resamples() -> None:
    seed_scores, best_scores = [0.0, 1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 1.0]
    gains = [1.0, 0.0, 0.0, -1.0, 1.0]
    rng = random.Random(11)
    means = sorted(sum(rng.choices(gains, k=5)) / 5 for _ in range(40))
    j = math.floor(40 * 0.1 / 2)  # 2: the third smallest and the third largest of 40
    got = bootstrap_gain_interval(seed_scores, best_scores, seed=11, resamples=40, level=0.9)
    assert got == (means[j], means[39 - j])
    assert got[0] < 0.2 < got[1]  # the mean gain, 0.2, lies inside


def test_the_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = random.Random(5)
    a = [float(rng.random() < 0.5) for _ in range(40)]
    b = [float(rng.random() < 0.7) for _ in range(40)]
    first = bootstrap_gain_interval(a, b, seed=1)
    assert bootstrap_gain_interval(a, b, seed=1) == first
    assert bootstrap_gain_interval(a, b, seed=2) != first
    with pytest.raises(ValueError):
        bootstrap_gain_interval([], [])


def test_majority_class_ties_go_to_the_first_label_as_text() -> None:
    assert majority_class(["b", "a", "a", "b", "c"]) == ("a", 0.4)
    assert majority_class(["b", "a"]) == ("a", 0.5)
    assert majority_class(["no", "yes", "yes"]) == ("yes", 2 / 3)


def test_majority_class_skips_missing_targets() -> None:
    assert majority_class([None, "x", None, "y", "x"]) == ("x", 2 / 3)
    assert majority_class([None]) is None
    assert majority_class([]) is None
    assert majority_class([2, 1, 2]) == (2, 2 / 3)


def test_only_labels_get_a_majority_class() -> None:
    assert is_labelled(["a", "b", None])
    assert is_labelled([str(i) for i in range(10)])
    assert not is_labelled([str(i) for i in range(11)])  # free text
    assert is_labelled([str(i) for i in range(11)], choices=("x",))
    assert not is_labelled([["paris", "Paris"], "rome"])  # lists of acceptable answers
    assert not is_labelled([None, None])


def test_p_text() -> None:
    assert p_text(0.021484375) == "p = 0.021"
    assert p_text(0.0004) == "p < 0.001"
    assert p_text(1.0) == "p = 1.000"


def _scores(values: str) -> dict[str, float]:
    return {f"e{i:02d}": float(v) for i, v in enumerate(values)}


def test_compare_a_best_that_wins_clearly() -> None:
    seed = _scores("10101010101010101010")  # says the first label: right on the even rows
    best = _scores("11111111111111111110")  # right on all but the last
    c = compare(seed, best, val_targets=["p", "n", "p", "p"], test_targets=["p", "n"] * 10,
                best_val=1.0, choices=("p", "n"))  # fmt: skip
    assert (c.wins, c.losses, c.ties, c.paired) == (9, 0, 11, 20)
    assert c.p_value == 2 / 512 and c.significant
    assert c.gain == pytest.approx(0.45) and c.interval is not None
    assert c.interval[0] > 0.2 and c.interval[1] < 0.7
    assert c.majority_val == ("p", 0.75) and c.majority_test == ("n", 0.5)
    assert c.best_test == pytest.approx(0.95) and c.val_to_test_drop == pytest.approx(0.05)
    assert c.beats_majority and c.verdicts() == []
    lines = c.lines()
    assert lines[0] == "majority class (always its label): validation 0.750 ('p'), test 0.500 ('n')"
    assert lines[1].startswith(
        "best vs seed on test (20 examples): 9 wins, 0 losses, p = 0.004 (McNemar exact), "
        "gain +0.450 (95% interval +"
    )
    assert lines[2] == "validation to test, best: 1.000 -> 0.950 (drop +0.050)"


def test_compare_names_what_fails_in_words() -> None:
    seed = _scores("0011000000")
    best = _scores("0101100000")  # 2 wins, 1 loss; 3 of 10 right: the majority says 0.7
    c = compare(seed, best, val_targets=["n"] * 5, test_targets=["n"] * 7 + ["p"] * 3,
                best_val=0.8)  # fmt: skip
    assert (c.wins, c.losses) == (2, 1) and c.p_value == 1.0
    assert c.majority_test == ("n", 0.7) and c.beats_majority is False
    assert c.verdicts() == [
        "the best does not beat the majority class (0.300 vs 0.700 on test, always answering 'n')",
        "the gain over the seed is not significant (p = 1.000, McNemar exact, at 0.05)",
        "the best dropped 0.500 from validation to test: its validation score, chosen on a "
        "small split, overstates it",
    ]


def test_a_best_that_is_the_seed_gains_nothing() -> None:
    seed = _scores("0110")
    c = compare(seed, seed, val_targets=[], test_targets=[], best_val=0.5)
    assert (c.wins, c.losses, c.ties, c.p_value, c.gain, c.interval) == (0, 0, 4, 1.0, 0.0,
                                                                        (0.0, 0.0))  # fmt: skip
    assert c.majority_val is None and c.majority_test is None  # no targets: no majority class
    assert c.verdicts() == [
        "the gain over the seed is not significant: the best and the seed scored alike on "
        "every test example"
    ]


def test_free_text_targets_get_the_test_but_no_majority_class() -> None:
    targets = [f"answer {i}" for i in range(12)]
    c = compare(_scores("0" * 12), _scores("1" * 12), val_targets=targets, test_targets=targets,
                best_val=1.0)  # fmt: skip
    assert c.majority_test is None and c.beats_majority is None
    assert c.p_value == 2 / 4096 and c.interval == (1.0, 1.0)
    assert not c.lines()[0].startswith("majority")


def test_a_significantly_worse_best_is_said_so() -> None:
    c = compare(_scores("1" * 10), _scores("0" * 10), val_targets=[], test_targets=[],
                best_val=None)  # fmt: skip
    assert c.val_to_test_drop is None
    assert c.verdicts() == ["the best is significantly worse than the seed on test "
                            "(p = 0.002, McNemar exact)"]  # fmt: skip
    assert isinstance(c, Comparison)
