"""The score predictor: dual ridge regression over character n-grams, against hand computation."""

from __future__ import annotations

import pytest

from promptopt.optimizers.score_predictor import ScorePredictor, _solve, features


def test_texts_with_no_shared_ngram_give_the_hand_computed_ridge_solution():
    # " aaa " and " bbb " share no 3-5-gram: unit vectors with K = I, so
    # alpha = (y - mean) / (1 + ridge) and a training text predicts mean + alpha_i
    predictor = ScorePredictor(ridge=1.0).fit(["aaa", "bbb"], [1.0, 0.0])
    assert predictor.predict("aaa") == pytest.approx(0.5 + 0.5 / 2)
    assert predictor.predict("bbb") == pytest.approx(0.5 - 0.5 / 2)
    assert predictor.predict("zzz") == pytest.approx(0.5)  # nothing known: the mean
    sharper = ScorePredictor(ridge=0.5).fit(["aaa", "bbb"], [1.0, 0.0])
    assert sharper.predict("aaa") == pytest.approx(0.5 + 0.5 / 1.5)


def test_features_are_unit_length_tf_idf_over_known_ngrams():
    idf = {" ab": 1.0, "ab ": 2.0}
    vector = features("ab", idf, sizes=(3,))
    # both 3-grams of " ab " occur once: weights 1 and 2, scaled to unit length
    assert vector == pytest.approx({" ab": 1 / 5**0.5, "ab ": 2 / 5**0.5})
    assert features("xy", idf, sizes=(3,)) == {}


def test_solve_matches_a_hand_solved_system():
    # 2x + y = 5, x + 3y = 10  ->  x = 1, y = 3
    assert _solve([[2.0, 1.0], [1.0, 3.0]], [5.0, 10.0]) == pytest.approx([1.0, 3.0])


def test_it_learns_which_words_score_and_ranks_unseen_prompts():
    texts = [
        "Read the message carefully, then answer.",
        "Answer quickly.",
        "Carefully read every word before answering.",
        "Give a quick answer.",
        "Think carefully about the message.",
        "Be quick.",
    ]
    scores = [0.9, 0.2, 0.85, 0.3, 0.8, 0.1]
    predictor = ScorePredictor().fit(texts, scores)
    assert predictor.pairs == 6
    careful = predictor.predict("Read carefully and answer.")
    quick = predictor.predict("Answer quick and short.")
    assert careful > 0.55 > quick


def test_fit_checks_its_arguments():
    with pytest.raises(ValueError, match="2 texts but 1 scores"):
        ScorePredictor().fit(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="ridge must be positive"):
        ScorePredictor(ridge=0)
