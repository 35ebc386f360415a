"""Reading the lists of labels a prompt's text writes, and the notes a summary prints on them."""

from __future__ import annotations

import pytest

from promptopt.label_lists import label_notes, listed_labels
from promptopt.stats import compare

SST2 = ("positive", "negative")
TREC = ("abbreviation", "description", "entity", "human", "location", "number")


@pytest.mark.parametrize(
    ("text", "choices", "lists"),
    [
        (
            "Reply with exactly one word: positive or negative.",
            SST2,
            [(["positive", "negative"], [])],
        ),
        ("Answer Positive, negative, or neutral.", SST2, [(["positive", "negative"], ["neutral"])]),
        ("positive/negative/mixed", SST2, [(["positive", "negative"], ["mixed"])]),
        (
            "Say \"positive\", `negative` or 'neutral'.",
            SST2,
            [(["positive", "negative"], ["neutral"])],
        ),
        ("positive|mixed|negative", SST2, [(["positive", "negative"], ["mixed"])]),
        # after a bare comma the sentence may go on: not a label
        ("Answer positive or negative, then stop.", SST2, [(["positive", "negative"], [])]),
        ("Say neutral, positive or negative.", SST2, [(["positive", "negative"], [])]),
        # a list naming one choice, or none, is not a label list
        ("Read the review, think, or skim it. Say positive.", SST2, []),
        ("If it asks for a person, answer human or entity.", TREC, [(["human", "entity"], [])]),
    ],
)
def test_label_lists_are_read_from_a_text(text, choices, lists):
    assert listed_labels(text, choices) == lists


def test_a_word_listed_with_the_labels_that_is_not_a_choice_is_noted():
    notes = label_notes({"system": "Answer positive, negative, or neutral.", "k": 3}, SST2)
    assert notes == ["the best's 'system' lists 'neutral' with the labels, though the choices "
                     "are positive, negative"]  # fmt: skip
    assert label_notes({"system": "Reply with one word: positive or negative."}, SST2) == []
    # label words in prose, half of the choices or fewer: not the label list
    prose = "If the question describes something, like a human, place, entity, or number, say so."
    assert label_notes({"system": prose}, TREC) == []
    listed = "Answer abbreviation, description, entity, human, place or number."
    assert label_notes({"system": listed}, TREC) == [
        "the best's 'system' lists 'place' with the labels, though the choices are "
        "abbreviation, description, entity, human, location, number",
        "the best's 'system' lists the labels without 'location': its answers may lean away "
        "from it",
    ]


def test_a_choice_left_out_of_the_label_list_and_never_named_is_noted():
    dropped = "Reply with exactly one word: abbreviation, description, entity, human, location."
    assert label_notes({"system": dropped}, TREC) == [
        "the best's 'system' lists the labels without 'number': its answers may lean away from it"
    ]
    whole = dropped.replace("location.", "location or number.")
    assert label_notes({"system": whole}, TREC) == []
    # rules per label list a few at a time and name the rest elsewhere: nothing left out
    rules = ("People, places or things: human, location or entity. A count is a number, a short "
             "form an abbreviation, a definition a description.")  # fmt: skip
    assert label_notes({"system": rules}, TREC) == []
    # a two-label task's list of both is whole; one of them alone is no list
    assert label_notes({"system": "Say positive."}, SST2) == []


def test_the_comparison_says_its_label_notes_after_the_numbers():
    c = compare({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, val_targets=["x", "y"],
                test_targets=["x", "y"], best_val=1.0, label_notes=["a note"])  # fmt: skip
    assert c.verdicts()[-1] == "a note" and c.label_notes == ("a note",)
