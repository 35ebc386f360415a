"""A light score predictor for candidate prompts: ridge regression over character n-grams.

PROMST's "heuristic sampling" (never released by its authors): learn online from
the (candidate text, validation score) pairs seen so far, then rank surplus
rewrites so that only the promising ones cost evaluations. Pure Python, no
numpy: a text becomes a sparse vector of its character 3- to 5-grams (words
lower-cased and joined by single spaces), weighted by sublinear term frequency
times smoothed inverse document frequency over the training texts, and scaled
to unit length. With few pairs (tens, not thousands) the ridge regression is
solved in its dual form: ``alpha = (K + ridge * I)^-1 (y - mean(y))`` with ``K``
the Gram matrix of the training vectors, and a prediction is ``mean(y) +
sum_i alpha_i <x_i, x>``. Everything is deterministic: no hashing, no sampling.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["ScorePredictor", "features"]

Vector = dict[str, float]


def _grams(text: str, sizes: Sequence[int]) -> Counter[str]:
    words = " ".join(text.lower().split())
    padded = f" {words} "
    return Counter(padded[i : i + n] for n in sizes for i in range(len(padded) - n + 1))


def features(text: str, idf: dict[str, float], *, sizes: Sequence[int] = (3, 4, 5)) -> Vector:
    """``text`` as a unit-length sparse vector of its n-grams (TF-IDF; unknown n-grams dropped)."""
    counts = _grams(text, sizes)
    vector = {g: (1.0 + math.log(c)) * idf[g] for g, c in counts.items() if g in idf}
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {g: v / norm for g, v in vector.items()} if norm else {}


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(g, 0.0) for g, v in a.items())


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` (symmetric positive definite) by Gaussian elimination."""
    n = len(rhs)
    a = [row[:] + [rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for row in range(col + 1, n):
            factor = a[row][col] / a[col][col]
            if factor:
                for k in range(col, n + 1):
                    a[row][k] -= factor * a[col][k]
    x = [0.0] * n
    for row in range(n - 1, -1, -1):
        x[row] = (a[row][n] - sum(a[row][k] * x[k] for k in range(row + 1, n))) / a[row][row]
    return x


class ScorePredictor:
    """Fit on (text, score) pairs; predict the score of new texts. Refit from scratch each time."""

    def __init__(self, *, ridge: float = 1.0, sizes: Sequence[int] = (3, 4, 5)) -> None:
        if ridge <= 0:
            raise ValueError(f"ridge must be positive, got {ridge!r}")
        self.ridge = ridge
        self.sizes = tuple(sizes)
        self._idf: dict[str, float] = {}
        self._vectors: list[Vector] = []
        self._alpha: list[float] = []
        self._mean = 0.0

    @property
    def pairs(self) -> int:
        """How many pairs the predictor was fitted on."""
        return len(self._vectors)

    def fit(self, texts: Sequence[str], scores: Sequence[float]) -> ScorePredictor:
        """Fit on ``texts`` and their ``scores`` (equal lengths); returns self."""
        if len(texts) != len(scores):
            raise ValueError(f"{len(texts)} texts but {len(scores)} scores")
        grams = [set(_grams(t, self.sizes)) for t in texts]
        df = Counter(g for seen in grams for g in seen)
        n = len(texts)
        self._idf = {g: math.log((1 + n) / (1 + d)) + 1.0 for g, d in df.items()}
        self._vectors = [features(t, self._idf, sizes=self.sizes) for t in texts]
        self._mean = sum(scores) / n if n else 0.0
        gram = [[_dot(a, b) for b in self._vectors] for a in self._vectors]
        for i in range(n):
            gram[i][i] += self.ridge
        self._alpha = _solve(gram, [s - self._mean for s in scores]) if n else []
        return self

    def predict(self, text: str) -> float:
        """The predicted score of ``text`` (the training mean when nothing is known)."""
        x = features(text, self._idf, sizes=self.sizes)
        return self._mean + sum(
            a * _dot(v, x) for a, v in zip(self._alpha, self._vectors, strict=True)
        )
