"""parse_json_reply: the JSON object in an optimizer model's reply, read tolerantly."""

from __future__ import annotations

import json

import pytest

from promptopt.errors import OptimizerError, ReplyParseError
from promptopt.optimizers.replies import (
    check_value,
    match_name,
    parse_json_reply,
    placeholders,
    read_rewrite,
    reply_schema,
)

GOOD = {"reasoning": "r", "answer": "a", "suggestion": {"instruction": "Be brief."}}


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "r", "answer": "a", "suggestion": {"instruction": "Be brief."}}',
        # code fences, with and without a language, and prose around them
        '```json\n{"reasoning": "r", "answer": "a", "suggestion": {"instruction": "Be brief."}}\n```',
        'Sure! Here it is:\n```\n{"reasoning": "r", "answer": "a",\n "suggestion": '
        '{"instruction": "Be brief."}}\n```\nHope this helps.',
        # single quotes (Python dict literal)
        "{'reasoning': 'r', 'answer': 'a', 'suggestion': {'instruction': 'Be brief.'}}",
        # trailing commas
        '{"reasoning": "r", "answer": "a", "suggestion": {"instruction": "Be brief.",},}',
        '{"reasoning": "r",\n "answer": "a",\n "suggestion": {"instruction": "Be brief."},\n}',
        # a second object after the first is ignored
        '{"reasoning": "r", "answer": "a", "suggestion": {"instruction": "Be brief."}} '
        '{"other": 1}',
        # a brace in prose before the object that is not an object
        'Use {braces} wisely. {"reasoning": "r", "answer": "a", "suggestion": '
        '{"instruction": "Be brief."}}',
    ],
)
def test_reads_the_object(text):
    assert parse_json_reply(text) == GOOD


def test_braces_and_quotes_inside_strings_do_not_count():
    text = '{"reasoning": "a } and a { and it\'s \\" fine", "suggestion": {"x": "[{"}}'
    assert parse_json_reply(text) == {
        "reasoning": "a } and a { and it's \" fine",
        "suggestion": {"x": "[{"},
    }


def test_raw_newlines_inside_strings():
    text = '{"suggestion": {"route.code": "def route(team):\n    return team\n"}}'
    assert (
        parse_json_reply(text)["suggestion"]["route.code"] == "def route(team):\n    return team\n"
    )


def test_python_and_json_literals_mixed():
    text = "{'ok': true, 'missing': null, 'no': False, 'items': [1, 2,], 'word': 'true'}"
    assert parse_json_reply(text) == {
        "ok": True,
        "missing": None,
        "no": False,
        "items": [1, 2],
        "word": "true",
    }


def test_triple_quoted_python_strings():
    text = "{'suggestion': {'f.code': '''def f(x):\n    return x + 1\n'''}}"
    assert parse_json_reply(text) == {"suggestion": {"f.code": "def f(x):\n    return x + 1\n"}}


def test_keys_become_strings():
    assert parse_json_reply("{1: 'a', 'b': 2}") == {"1": "a", "b": 2}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I think the instruction should be shorter.", "no JSON object"),
        ('{"reasoning": "the model', "never closed"),
        ('```json\n{"reasoning": "r", "suggestion": {"a": "b"}\n```', "never closed"),
        ('{"reasoning": r, "answer": a}', "not valid JSON"),
        ("{reasoning: the answer is 42}", "not valid JSON"),
        ("{'a': 1 'b': 2}", "not valid JSON"),
    ],
)
def test_failures_give_a_short_reason(text, reason):
    with pytest.raises(ReplyParseError, match=reason) as info:
        parse_json_reply(text)
    assert len(str(info.value)) < 200
    assert isinstance(info.value, OptimizerError)


def test_first_readable_object_wins_over_broken_ones():
    text = '{broken: yes} then {"suggestion": {"a": "b"}}'
    assert parse_json_reply(text) == {"suggestion": {"a": "b"}}


def test_the_reason_names_the_first_broken_object():
    with pytest.raises(ReplyParseError, match="line 1 column 2"):
        parse_json_reply("{broken} {also broken}")


def test_not_a_string():
    with pytest.raises(ReplyParseError, match="empty"):
        parse_json_reply(None)  # type: ignore[arg-type]


def test_a_huge_nested_reply_does_not_crash():
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ReplyParseError):
        parse_json_reply(deep)


# -- names and values ------------------------------------------------------------------------

NAMES = ("instruction", "exemplars", "route.code", "tone")


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("instruction", "instruction"),
        ("#instruction", "instruction"),
        ("$Instruction", "instruction"),
        ("`INSTRUCTION`", "instruction"),
        ("route.code", "route.code"),
        ("route_code", "route.code"),
        ("#route", "route.code"),
        ("Tone:", "tone"),
        ("nope", None),
        ("", None),
        ("###", None),
    ],
)
def test_match_name(key, name):
    assert match_name(key, NAMES) == name


def test_match_name_refuses_ambiguity():
    assert match_name("a", ("a.code", "A")) == "A"
    assert match_name("ab", ("a.b", "a_b")) is None


OLD = 'def route(team, message):\n    """Rules."""\n    return team\n'


def test_text_values():
    assert check_value("text", "  Be brief. ", "Be long.", name="t") == "Be brief."
    for bad, reason in ((3, "non-empty text"), ("  ", "non-empty text"), ("Be long.", "unchanged")):
        with pytest.raises(ReplyParseError, match=reason):
            check_value("text", bad, "Be long.", name="t")


def test_text_keeps_the_template_placeholders():
    old = "Review: {text}\nAnswer {{in json}}:"
    assert placeholders(old) == ["text"]
    assert check_value("text", "Text: {text}\nSentiment:", old, name="user") == (
        "Text: {text}\nSentiment:"
    )
    with pytest.raises(ReplyParseError, match=r"keep the placeholders \{text\}"):
        check_value("text", "Sentiment of the review:", old, name="user")


def test_text_adds_no_placeholder_that_no_input_fills():
    system = "positive or negative"
    promst = system + " (expected classification: {expected_class})"
    with pytest.raises(ReplyParseError, match=r"uses \{expected_class\}, which no input fills "
                       r"\(the inputs: \{text\}\)"):  # fmt: skip
        check_value("text", promst, system, name="system", fields=["text"])
    # an input field may be named, a placeholder the old text had may stay, braces that are
    # no placeholder are text, and a user template may take another input
    assert check_value("text", "Label {text}.", system, name="system", fields=["text"])
    assert check_value("text", "{a} then {b}", "{a} or {b}", name="user", fields=["text"])
    assert check_value("text", 'Answer {"label": ...} or {{x}}.', system, name="system")
    assert check_value("text", "{q} in {ctx}", "{q}", name="user", fields=["q", "ctx"])
    with pytest.raises(ReplyParseError, match=r"\{ctx\}, which no input fills \(the inputs: none"):
        read_rewrite('{"prompt": "{q} in {ctx}"}', key="prompt", old="{q}", name="user")
    assert read_rewrite('{"prompt": "{q} in {ctx}"}', key="prompt", old="{q}", name="user",
                        fields=["q", "ctx"]) == "{q} in {ctx}"  # fmt: skip


def test_code_values():
    new = "def route(team, message):\n    return 'billing' if 'refund' in message else team\n"
    assert check_value("code", new, OLD, name="route.code") == new
    fenced = "```python\n" + new + "```"
    assert check_value("code", fenced, OLD, name="route.code") == new
    with_import = "import re\n\n" + new
    assert check_value("code", with_import, OLD, name="route.code") == with_import
    indented = "    " + new.replace("\n    ", "\n        ")
    assert check_value("code", indented, OLD, name="route.code") == new


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        ("def route(team, message) return team", "does not compile: .*line 1"),
        ("def other(team, message):\n    return team\n", "exactly one function, named 'route'"),
        ("def route(team, message):\n    return team\ndef route2(x):\n    return x\n", "exactly"),
        ("x = 1\ndef route(team, message):\n    return team\n", "only the function"),
        ("def route(team):\n    return team\n", r"keep the arguments \(team, message\)"),
        ("def route(team, message):\n    '''Rules.'''\n    return (team)\n", "unchanged"),
        (["def route(team, message): ..."], "source code"),
        ("", "source code"),
    ],
)
def test_code_rejections(new, reason):
    with pytest.raises(ReplyParseError, match=reason):
        check_value("code", new, OLD, name="route.code")


def test_exemplar_values():
    item = {"inputs": {"message": "refund please", "extra": 1}, "output": "billing"}
    expected = [{"inputs": {"message": "refund please"}, "output": "billing"}]
    assert check_value("exemplars", [item], [], name="ex", fields=["message"]) == expected
    as_text = json.dumps([item])
    assert check_value("exemplars", as_text, [], name="ex", fields=["message"]) == expected
    assert check_value("exemplars", item, [], name="ex", fields=["message"]) == expected
    number = {"inputs": {"message": "x"}, "output": 3}
    assert check_value("exemplars", [number], [], name="ex")[0]["output"] == "3"


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        ("not json", "JSON list"),
        ([], "non-empty list"),
        ("[]", "non-empty list"),
        ([{"output": "billing"}], "item 0 must be an object"),
        ([{"inputs": {"message": "x"}}], "item 0 must be an object"),
        ([{"inputs": {"text": "x"}, "output": "b"}], "lacks the input 'message'"),
        ([{"inputs": {"message": "same"}, "output": "billing"}], "unchanged"),
    ],
)
def test_exemplar_rejections(new, reason):
    old = [{"inputs": {"message": "same"}, "output": "billing", "label": "billing"}]
    with pytest.raises(ReplyParseError, match=reason):
        check_value("exemplars", new, old, name="ex", fields=["message"])


def test_exemplar_outputs_are_among_the_choices():
    # an answer the program cannot give teaches it nothing: OptoPrime on SST-2 wrote "neutral"
    choices = ("positive", "negative")
    item = {"inputs": {"text": "dull"}, "output": "Negative "}
    got = check_value("exemplars", [item], [], name="ex", fields=["text"], choices=choices)
    assert got == [{"inputs": {"text": "dull"}, "output": "negative"}]
    neutral = {"inputs": {"text": "so-so"}, "output": "neutral"}
    with pytest.raises(
        ReplyParseError, match=r"item 1 has the output 'neutral'.*positive, negative"
    ):
        check_value("exemplars", [item, neutral], [], name="ex", fields=["text"], choices=choices)
    # spelled as a choice, the same exemplars as before are no change
    old = [{"inputs": {"text": "dull"}, "output": "negative"}]
    with pytest.raises(ReplyParseError, match="unchanged"):
        check_value("exemplars", [item], old, name="ex", fields=["text"], choices=choices)
    # without choices any output is kept as written
    assert check_value("exemplars", [neutral], [], name="ex")[0]["output"] == "neutral"


def test_unknown_kind():
    with pytest.raises(ReplyParseError, match="cannot be edited"):
        check_value("calibration", {}, {}, name="calibration")


def test_a_reply_schema_lists_its_keys_in_the_order_given():
    schema = json.loads(reply_schema((("reasoning", 500), ("prompt", 80))))
    assert list(schema["properties"]) == ["reasoning", "prompt"]
    assert schema["required"] == ["reasoning", "prompt"]
    assert schema["properties"]["prompt"]["maxLength"] == 80
