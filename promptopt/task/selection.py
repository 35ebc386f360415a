"""Choosing exemplars from a pool by similarity: the nearest to an input, or a diverse set.

A pool item is an exemplar, ``{"inputs": {...}, "output": "..."}``. Both
selectors compare the items' inputs as text (:func:`~promptopt.task.embedding.text_of`)
through an embedder, and are deterministic for the same pool, input and rng:

- :func:`nearest`: the ``k`` items most similar to one input, most similar
  last (nearest to the question the model is about to answer); an item with
  the very same inputs is never chosen (showing a validation example its own
  answer would leak it);
- :func:`diverse`: ``k`` medoids of a k-means clustering of the pool, so the
  set spans the kinds of input there are (Wan et al. 2024's "diverse").

:class:`NearestExemplars` is the parameter value that asks a prompt program
to pick the nearest exemplars for each input at request time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptopt.errors import ConfigError
from promptopt.task.embedding import EMBEDDERS, Embedder, cosine, make_embedder, text_of

__all__ = ["NearestExemplars", "diverse", "nearest"]

_KMEANS_ROUNDS = 8


def nearest(
    pool: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any],
    *,
    k: int,
    embedder: Embedder,
    vectors: Sequence[dict] | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` pool items nearest to ``inputs``, the nearest last; never ``inputs`` itself."""
    vectors = (
        vectors if vectors is not None else embedder.vectors([text_of(i["inputs"]) for i in pool])
    )
    (query,) = embedder.vectors([text_of(inputs)])
    ranked = sorted(
        (i for i, item in enumerate(pool) if dict(item["inputs"]) != dict(inputs)),
        key=lambda i: (-cosine(query, vectors[i]), i),
    )
    return [dict(pool[i]) for i in reversed(ranked[:k])]


def diverse(
    pool: Sequence[Mapping[str, Any]], *, k: int, embedder: Embedder, rng: random.Random
) -> list[dict[str, Any]]:
    """``k`` medoids of a k-means clustering of the pool (all of it when it is that small)."""
    if len(pool) <= k:
        return [dict(item) for item in pool]
    vectors = embedder.vectors([text_of(item["inputs"]) for item in pool])
    seeds = [rng.randrange(len(pool))]  # then farthest-first: k-means++ without the dice
    while len(seeds) < k:
        seeds.append(min((i for i in range(len(pool)) if i not in seeds),
                         key=lambda i: (max(cosine(vectors[i], vectors[s]) for s in seeds), i)))  # fmt: skip
    centres = [dict(vectors[i]) for i in seeds]
    members: list[list[int]] = []
    for _ in range(_KMEANS_ROUNDS):
        members = [[] for _ in centres]
        for i, vector in enumerate(vectors):
            best = max(range(len(centres)), key=lambda c: (cosine(vector, centres[c]), -c))
            members[best].append(i)
        centres = [_mean([vectors[i] for i in group]) if group else centres[c]
                   for c, group in enumerate(members)]  # fmt: skip
    chosen: list[int] = []
    for c, group in enumerate(members):
        options = [i for i in (group or range(len(pool))) if i not in chosen]
        if options:
            chosen.append(max(options, key=lambda i: (cosine(vectors[i], centres[c]), -i)))
    rest = [i for i in range(len(pool)) if i not in chosen]
    while len(chosen) < k and rest:  # an empty cluster: fill from the rest, at random
        chosen.append(rest.pop(rng.randrange(len(rest))))
    return [dict(pool[i]) for i in chosen]


def _mean(vectors: Sequence[dict]) -> dict:
    total: dict = {}
    for vector in vectors:
        for key, weight in vector.items():
            total[key] = total.get(key, 0.0) + weight / len(vectors)
    return total


@dataclass(frozen=True)
class NearestExemplars:
    """``{"select": "nearest", "k": k, "embedder": name, "pool": [...]}`` as an object.

    A prompt program whose ``exemplars`` parameter holds this dict shows, for
    each input, the ``k`` pool items nearest to it. The embedder is fitted on
    the pool (TF-IDF), so the choice depends on nothing but the value itself.
    """

    k: int
    pool: tuple[dict[str, Any], ...]
    embedder: str = "tfidf"

    @staticmethod
    def is_spec(value: Any) -> bool:
        return isinstance(value, Mapping) and value.get("select") == "nearest"

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> NearestExemplars:
        k, pool, embedder = value.get("k"), value.get("pool"), value.get("embedder", "tfidf")
        if (
            not isinstance(k, int)
            or k < 1
            or not isinstance(pool, list)
            or embedder not in EMBEDDERS
        ):
            raise ConfigError(
                "nearest exemplars need {'select': 'nearest', 'k': int >= 1, 'pool': [...], "
                f"'embedder': one of {list(EMBEDDERS)!r}}}, got {json.dumps(value)[:200]}"
            )
        return cls(k=k, pool=tuple(dict(item) for item in pool), embedder=embedder)

    def to_value(self) -> dict[str, Any]:
        return {
            "select": "nearest",
            "k": self.k,
            "embedder": self.embedder,
            "pool": list(self.pool),
        }


class NearestIndex:
    """One :class:`NearestExemplars` value with its pool embedded once, for many inputs."""

    def __init__(self, spec: NearestExemplars) -> None:
        self.spec = spec
        texts = [text_of(item["inputs"]) for item in spec.pool]
        self.embedder = make_embedder(spec.embedder, texts)
        self.vectors = self.embedder.vectors(texts)

    def pick(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        return nearest(self.spec.pool, inputs, k=self.spec.k, embedder=self.embedder,
                       vectors=self.vectors)  # fmt: skip
