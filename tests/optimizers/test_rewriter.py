"""Reading new versions of a text from replies, and telling them from no-ops."""

from __future__ import annotations

import random
from string import Template

import pytest

from promptopt.errors import BadRequestError, OptimizerError
from promptopt.llm.fakes import scripted_llm
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.answers import mistakes, rules
from promptopt.optimizers.base import (
    PROMPT_SHAPE,
    Candidate,
    ExampleResult,
    SearchState,
    candidate_id,
)
from promptopt.optimizers.copies import drop_repeats, holds_quote, input_runs
from promptopt.optimizers.replies import marked_texts
from promptopt.optimizers.rewriters import (
    MarkedRewriter,
    quoted_lines,
    same_words,
    show_example,
    text_targets,
)
from promptopt.task.data import Example
from promptopt.task.metrics import Score

RETRY = Template("$problem Write a different version of $name.")
BASE = {"user": "Review: {text}\nAnswer:", "exemplars": []}
REQUEST = LLMRequest(messages=(Message("user", "rewrite it"),), tag="optimizer")


@pytest.mark.parametrize(
    ("reply", "texts"),
    [
        ("<START>one<END> and <START> two <END>", ["one", "two"]),
        ("Here: <START>cut off at the end", ["cut off at the end"]),
        ("<START><END><START>x<END>", ["x"]),
        ("```\nA plain reply in a fence\n```", ["A plain reply in a fence"]),
        ("No markers at all<END>", ["No markers at all"]),
        ("<START>\nClosed as a tag.\n</END>", ["Closed as a tag."]),
        ("<START>\nClosed by the wrong tag.\n</START>\nThen talk.", ["Closed by the wrong tag."]),
        ("   ", []),
    ],
)
def test_marked_texts(reply, texts):
    assert marked_texts(reply) == texts


async def ask(*replies, retries=1, taken=(), count=1, quoted=(), keys=None):
    """The new versions, the stats and the requests sent; ``keys`` (a list) gets the key of
    the versions' request and the key of each request sent."""
    llm = scripted_llm(*replies)
    stats: dict[str, int] = {}
    rewriter = MarkedRewriter(stats=stats, retries=retries, retry=RETRY)
    found = await rewriter.versions(llm, REQUEST, name="user", base=BASE, count=count,
                                    taken=set(taken), fields=["text"], rng=random.Random(0),
                                    quoted=quoted)  # fmt: skip
    if keys is not None:
        keys += [found.key, *map(llm.key, llm.backend.requests)]
    return found.values, stats, llm.backend.requests


async def test_a_new_version_comes_back_at_once():
    found, stats, requests = await ask("<START>Review: {text}\nSentiment:<END>")
    assert found == ["Review: {text}\nSentiment:"]
    assert (stats["calls"], stats["noops"], stats["invalid"], stats["retries"]) == (1, 0, 0, 0)
    assert len(requests) == 1


async def test_the_current_text_is_a_noop_and_the_retry_says_so():
    keys: list[str | None] = []
    found, stats, requests = await ask("<START>Review: {text}\nAnswer:<END>", "<START>{text}?<END>",
                                       keys=keys)  # fmt: skip
    assert found == ["{text}?"]
    found_key, first, second = keys
    assert found_key == second != first  # the retry's reply held the version
    assert (stats["noops"], stats["retries"]) == (1, 1)
    retry = requests[1]
    assert [m.role for m in retry.messages] == ["user", "assistant", "user"]
    assert retry.messages[-1].content.startswith("That version is the current text")
    assert retry.temperature == 0.7 and retry.seed is not None


async def test_the_current_words_with_other_punctuation_are_a_noop():
    found, stats, _ = await ask("<START>review {text} ANSWER<END>", retries=0)
    assert found == [] and (stats["noops"], stats["invalid"]) == (1, 0)
    assert same_words("Reply: yes, or no.", "reply yes or no") and not same_words("a b", "b a")


async def test_a_version_that_copies_the_request_is_invalid_and_the_retry_says_so():
    shown = "## Example 1\nquestion: Who wrote Hamlet ?\nexpected output: human\nok"
    quoted = quoted_lines(shown)
    assert quoted == [PROMPT_SHAPE, "## Example 1", "expected output: human",
                      "question: Who wrote Hamlet ?"]  # fmt: skip
    found, stats, requests = await ask(
        "<START>{text}\nquestion: Who wrote Hamlet ?\nAnswer: human<END>",
        "<START>Question: {text}\nAnswer with its type:<END>",
        quoted=quoted,
    )
    assert found == ["Question: {text}\nAnswer with its type:"]
    assert (stats["invalid"], stats["noops"], stats["retries"]) == (1, 0, 1)
    assert requests[1].messages[-1].content.startswith("That version copies parts of this request")


def test_the_word_runs_of_the_inputs_shown_that_a_version_must_not_hold():
    shown = [{"text": "daring and beautifully made ."}, {"text": "ok film"},
             {"text": "a brisk , reverent , and subtly different sequel ."}]  # fmt: skip
    runs = input_runs(shown)
    # a short input whole (3-6 words), a longer one 6 words in a row; 2 words is too common
    assert ("daring", "and", "beautifully", "made") in runs and ("ok", "film") not in runs
    assert ("a", "brisk", "reverent", "and", "subtly", "different") in runs and len(runs) == 3
    assert holds_quote("It is both DARING and beautifully-made.", runs)
    assert not holds_quote("Daring films are positive; beautifully made ones too.", runs)
    assert not holds_quote("a brisk, reverent sequel is positive", runs)
    # the current value may keep what it already holds
    assert input_runs(shown[:1], allowed="Like 'daring and beautifully made': positive") == []
    quoted = quoted_lines("text: ok film", inputs=shown, current="positive or negative")
    assert quoted[:2] == [PROMPT_SHAPE, "text: ok film"] and quoted[2:] == runs


async def test_a_version_describing_an_input_shown_is_invalid_and_the_retry_says_so():
    quoted = quoted_lines(inputs=[{"text": "daring and beautifully made ."}], current="{text}")
    found, stats, requests = await ask(
        "<START>This text describes a movie that is both daring and beautifully made. {text}<END>",
        "<START>Say whether this review of a film is positive or negative: {text}<END>",
        quoted=quoted,
    )
    assert found == ["Say whether this review of a film is positive or negative: {text}"]
    assert (stats["invalid"], stats["retries"]) == (1, 1)
    assert requests[1].messages[-1].content.startswith("That version copies parts of this request")


async def test_a_version_already_scored_is_a_noop():
    scored = candidate_id({**BASE, "user": "{text} ?"})
    found, stats, _ = await ask("<START>{text} ?<END>", retries=0, taken={scored})
    assert found == [] and stats["noops"] == 1


async def test_a_lost_placeholder_is_named_in_the_retry():
    found, stats, requests = await ask("<START>Answer now.<END>", "<START>{text} now<END>")
    assert found == ["{text} now"]
    assert stats["invalid"] == 1
    assert "keep the placeholders {text}" in requests[1].messages[-1].content


async def test_count_and_duplicates_within_a_reply():
    found, _, _ = await ask("<START>a {text}<END><START>a {text}<END><START>b {text}<END>", count=2)
    assert found == ["a {text}", "b {text}"]


async def test_a_prompt_the_model_cannot_take_ends_the_attempts():
    found, stats, _ = await ask(BadRequestError("context length exceeded"))
    assert found == [] and stats["request_errors"] == 1 and stats["replies"] == 0


def state(trainable=("system", "user", "exemplars"), choices=()):
    kinds = {"system": "text", "user": "text", "exemplars": "exemplars"}

    async def evaluate(params, examples):
        raise AssertionError("not used")

    return SearchState(seed=Candidate(BASE), trainable=tuple(trainable), train=(), val=(),
                       program_description="", evaluate=evaluate, choices=tuple(choices),
                       kinds={k: kinds[k] for k in trainable})  # fmt: skip


def test_text_targets():
    assert text_targets(state(), None, optimizer="mcts") == ["system", "user"]
    assert text_targets(state(), ["user"], optimizer="mcts") == ["user"]
    with pytest.raises(OptimizerError, match="'exemplars'"):
        text_targets(state(), ["exemplars"], optimizer="mcts")
    with pytest.raises(OptimizerError, match="rewrites text parameters"):
        text_targets(state(trainable=("exemplars",)), None, optimizer="opro")


def test_rules_and_examples_show_shapes_not_answers():
    assert rules(state(choices=("yes", "no")), "Q: {text} {x}", name="system") == (
        "Keep the placeholders {text}, {x} exactly as written. "
        "The program's answer must be one of: yes, no."
    )
    example = Example("7", {"text": "fine " * 200}, "yes")
    result = ExampleResult(example, None, Score(0.0, valid=False, feedback="no answer"), "boom")
    shown = show_example(example, limit=40, result=result).splitlines()
    assert shown[0].startswith("text: fine fine") and shown[0].endswith("more chars]")
    assert shown[1:] == ["output: (failed: boom)", "expected output: yes", "feedback: no answer"]


def test_mistakes_name_the_commonest_confusions_with_their_counts():
    def result(i: int, want: str, got: str) -> ExampleResult:
        return ExampleResult(Example(str(i), {"q": f"q{i}"}, want), got,
                             Score(float(want == got)))  # fmt: skip

    results = [
        *(result(i, "human", "entity") for i in range(3)),
        result(3, "human", "human"),
        *(result(i, "description", "entity") for i in range(4, 6)),
        result(6, "number", "location"),
        result(7, "number", "number"),
        ExampleResult(Example("8", {"q": "q8"}, "human"), None, Score(0.0, valid=False), "boom"),
    ]
    assert mistakes(results, who="the prompt", where="the new prompt", top=2) == (
        "On 8 scored inputs the prompt got 6 wrong; most often it answered 'entity' where "
        "'human' was right (3 of 4 such inputs), answered 'entity' where 'description' was "
        "right (2 of 2 such inputs). Say in the new prompt how to tell these answers apart."
    )
    assert mistakes([result(0, "human", "human")], who="it", where="it") == ""
    # the rewriters name the text: "the current text" read as the input where a field is `text`
    assert rules(state(choices=("human", "entity")), "Q", results[:1], name="system") == (
        "The program's answer must be one of: human, entity. On 1 scored inputs the text "
        "\"system\" got 1 wrong; most often it answered 'entity' where 'human' was right (1 of 1 "
        'such inputs). Say in the new "system" how to tell these answers apart.'
    )
    assert "scored inputs" not in rules(state(), "Q", results, name="system")  # no choices


@pytest.mark.parametrize(
    ("reply", "max_tokens", "cut"),
    [
        ("<START>Read {text} and then name its", 6, 1),  # 6 tokens (the fake's words), open
        ("<START>Read {text} and then name its", 7, 0),  # under the limit: it ended there
        ("<START>Read {text} first.<END> and then", 6, 0),  # the version was whole
        ("Read {text} and then name its sentiment", 7, 1),  # no markers: the reply is the text
    ],
)
async def test_a_reply_cut_off_at_max_tokens_is_counted(reply, max_tokens, cut):
    llm = scripted_llm(reply)
    stats: dict[str, int] = {}
    rewriter = MarkedRewriter(stats=stats, retries=0, retry=RETRY)
    request = LLMRequest(messages=(Message("user", "rewrite it"),), tag="optimizer",
                         max_tokens=max_tokens)  # fmt: skip
    found = await rewriter.versions(llm, request, name="user", base={"user": "{text}"}, count=1,
                                    taken=set(), fields=["text"], rng=random.Random(0))  # fmt: skip
    assert stats["cut_off"] == cut
    assert len(found.values) == 1  # read and used all the same


_RULES = "If the review praises the film, answer positive.\nIf it mocks the film, answer negative."


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # a loop renumbering its rules, cut off mid-repeat by max_tokens: the text once
        (
            "Classify {text}.\nRules:\n1. If the review praises the film, answer positive.\n"
            "2. If it mocks the film, answer negative.\n\nRules:\n3. If the review praises the "
            "film, answer positive.\n4. If it mocks the film, answer negative.\n\nRules:\n5. If "
            "the review pr",
            "Classify {text}.\nRules:\n1. If the review praises the film, answer "
            "positive.\n2. If it mocks the film, answer negative.",
        ),
        # a repeat in the middle goes alone; the short lines and the text's own end stay
        (
            f"{_RULES}\n{{text}}\nIf it mocks the film, answer negative.\nAnswer:\nThen stop.",
            f"{_RULES}\n{{text}}\nAnswer:\nThen stop.",
        ),
        # a short line new at the end is not a loop's: it stays
        (f"{_RULES}\nIf it mocks the film, answer negative.\n{{text}}", f"{_RULES}\n{{text}}"),
        # short lines written twice on purpose, and no long repeat: unchanged
        ("Rules:\nBe brief.\nRules:\nBe brief.", "Rules:\nBe brief.\nRules:\nBe brief."),
        # a last line that begins an earlier one, with no repeat before it, is the text's own
        (f"{_RULES}\nIf the review", f"{_RULES}\nIf the review"),
    ],
)
def test_repeated_lines_are_read_once(text, kept):
    assert drop_repeats(text) == kept


async def test_a_looping_version_is_read_without_its_repeats_and_counted():
    loop = f"<START>Review: {{text}}\n{_RULES}\n{_RULES}\n{_RULES}\nIf the rev"
    stats: dict[str, int] = {}
    rewriter = MarkedRewriter(stats=stats, retries=0, retry=RETRY)
    found = await rewriter.versions(scripted_llm(loop), REQUEST, name="user", base=BASE,
                                    count=1, taken=set(), fields=["text"],
                                    rng=random.Random(0))  # fmt: skip
    assert found.values == [f"Review: {{text}}\n{_RULES}"]
    assert stats["repeats_cut"] == 1
    # a version without repeats is read as written, and not counted
    plain = await rewriter.versions(scripted_llm(f"<START>Review: {{text}}\n{_RULES}"), REQUEST,
                                    name="user", base=BASE, count=1, taken=set(),
                                    fields=["text"], rng=random.Random(0))  # fmt: skip
    assert plain.values == [f"Review: {{text}}\n{_RULES}"] and stats["repeats_cut"] == 1
