"""Similarity and exemplar selection: TF-IDF, nearest per input, diverse medoids, program use."""

from __future__ import annotations

import random

import pytest

from promptopt.errors import ConfigError
from promptopt.task.embedding import TfidfEmbedder, cosine, make_embedder, text_of
from promptopt.task.program import PromptProgram, shown_exemplars
from promptopt.task.selection import NearestExemplars, diverse, nearest


def ex(text: str, output: str = "x") -> dict:
    return {"inputs": {"text": text}, "output": output}


POOL = [
    ex("the pizza was cold and the waiter rude", "negative"),
    ex("a wonderful film with a moving score", "positive"),
    ex("cold soup, rude staff, never again", "negative"),
    ex("the film was wonderful, the score moving", "positive"),
]


def test_tfidf_vectors_are_unit_and_rank_shared_words_higher() -> None:
    embedder = TfidfEmbedder([text_of(i["inputs"]) for i in POOL])
    a, b, c = embedder.vectors(["cold pizza rude waiter", "cold soup rude staff", "wonderful film"])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, b) > cosine(a, c) >= 0.0
    assert embedder.vectors(["cold pizza rude waiter"]) == [a]  # deterministic


def test_nearest_picks_the_most_similar_last_and_never_the_input_itself() -> None:
    embedder = make_embedder("tfidf", [text_of(i["inputs"]) for i in POOL])
    picked = nearest(POOL, {"text": "rude waiter and cold pizza"}, k=2, embedder=embedder)
    assert [p["output"] for p in picked] == ["negative", "negative"]
    assert picked[-1] == POOL[0]  # the nearest sits right before the question
    itself = nearest(POOL, POOL[1]["inputs"], k=1, embedder=embedder)
    assert itself == [POOL[3]]  # its own row is skipped: showing it would leak the answer


def test_diverse_takes_one_medoid_from_each_cluster() -> None:
    pool = [ex(f"cold rude pizza {i}") for i in range(5)] + [
        ex(f"wonderful film {i}") for i in range(5)
    ]
    embedder = make_embedder("tfidf", [text_of(i["inputs"]) for i in pool])
    for seed in range(5):
        chosen = diverse(pool, k=2, embedder=embedder, rng=random.Random(seed))
        kinds = sorted("pizza" in c["inputs"]["text"] for c in chosen)
        assert kinds == [False, True], chosen
    assert diverse(pool[:2], k=3, embedder=embedder, rng=random.Random(0)) == pool[:2]


def test_a_prompt_program_shows_the_nearest_exemplars_per_input() -> None:
    program = PromptProgram(
        system="Classify.", user="Review: {text}", choices=("positive", "negative")
    )
    spec = NearestExemplars(k=1, pool=tuple(POOL)).to_value()
    request = program.request({"exemplars": spec}, {"text": "the film, wonderful again"})
    assert [m.content for m in request.messages[1:]] == [
        "Review: a wonderful film with a moving score",
        "positive",
        "Review: the film, wonderful again",
    ] or [m.content for m in request.messages[1:]] == [
        "Review: the film was wonderful, the score moving",
        "positive",
        "Review: the film, wonderful again",
    ]
    other = program.request({"exemplars": spec}, {"text": "cold soup and rude staff"})
    assert other.messages[1].content == "Review: cold soup, rude staff, never again"
    assert "nearest of these 4" in program.describe({"exemplars": spec})
    assert shown_exemplars(POOL, {"text": "anything"}) is POOL  # a plain list is shown as it is


@pytest.mark.parametrize(
    "value",
    [
        {"select": "nearest", "k": 0, "pool": []},
        {"select": "nearest", "k": 1},
        {"select": "nearest", "k": 1, "pool": [], "embedder": "word2vec"},
    ],
)
def test_a_malformed_nearest_value_is_a_clear_error(value: dict) -> None:
    with pytest.raises(ConfigError, match="nearest exemplars need"):
        NearestExemplars.from_value(value)


def test_an_unknown_embedder_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="embedder must be one of"):
        make_embedder("bag-of-words", [])
