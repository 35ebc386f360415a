"""backward: feedback and each trainable parameter's subgraph, in OptoPrime's sections."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError
from promptopt.graph import node, param, trace
from promptopt.graph.backward import backward


@node
def prompt(question, instruction):
    """Build the prompt."""
    return f"{instruction}\nQ: {question}"


@node
def answer(text):
    """Fake model."""
    return text[::-1]


@node
def grade(reply, rubric):
    return f"{reply} graded by {rubric}"


def test_subgraph_sections():
    instruction = param("Answer briefly.", name="instruction")
    rubric = param("strict rubric", name="rubric")
    with trace() as t:
        reply = answer(prompt("What is 2+2?", instruction.value))
        out = grade(reply, rubric.value)
    graphs = backward(out, 0.25, trace=t)
    assert set(graphs) == {"instruction", "rubric"}
    sub = graphs["instruction"]
    assert sub.code == (
        "prompt1 = prompt(question=prompt1.question, instruction=instruction)",
        "answer2 = answer(text=prompt1)",
        "grade4 = grade(reply=answer2, rubric=rubric)",
    )
    assert sub.documentation == {"prompt": "Build the prompt.", "answer": "Fake model."}
    assert sub.variables == {"instruction": "Answer briefly."}
    assert sub.inputs == {"prompt1.question": "What is 2+2?", "rubric": "strict rubric"}
    assert set(sub.others) == {"prompt1", "answer2"}
    assert sub.outputs == {"grade4": out}
    assert sub.feedback == "score: 0.25"
    assert graphs["rubric"].code == ("grade4 = grade(reply=answer2, rubric=rubric)",)
    assert [f.kind for f in t.feedback] == ["score"]


def test_text_and_exception_feedback():
    @node
    def boom(text):
        raise RuntimeError("model down")

    p = param("x y", name="p")
    with trace() as t:
        try:
            boom(p.value)
        except RuntimeError as exc:
            error = exc
    graphs = backward(error, error, trace=t)
    assert graphs["p"].outputs == {"boom1": "RuntimeError: model down"}
    assert graphs["p"].feedback == "RuntimeError: model down"
    backward(error, "try again", trace=t)
    assert [f.kind for f in t.feedback] == ["error", "text"]


def test_unknown_output_and_missing_trace():
    with trace() as t:
        answer("abc")
    with pytest.raises(ConfigError, match="not produced"):
        backward("elsewhere", 1.0, trace=t)
    with pytest.raises(ConfigError, match="needs a trace"):
        backward("x", 1.0)
    with pytest.raises(ConfigError, match="feedback"):
        backward(t.nodes[0], object(), trace=t)
