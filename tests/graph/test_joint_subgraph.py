"""joint_subgraph: one OptoPrime view covering every trainable parameter of a trace."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError
from promptopt.graph import Trace, node, param, trace
from promptopt.graph.backward import backward, joint_subgraph


@node
def prompt(question, instruction):
    """Build the prompt."""
    return f"{instruction}\nQ: {question}"


@node
def answer(text):
    """Fake model."""
    return text[::-1]


@node(trainable=True)
def tidy(reply, suffix):
    """Tidy the reply."""
    return reply.strip().lower() + suffix


@node
def side(text):
    return text.upper()


def _run() -> tuple[Trace, str]:
    instruction = param("Answer briefly.", name="instruction")
    suffix = param("!!", name="suffix")
    with trace() as t:
        out = tidy(answer(prompt("What is 2+2?", instruction.value)), suffix.value)
    return t, out


def test_covers_every_trainable_parameter():
    t, out = _run()
    backward(out, "expected '4'", trace=t)
    sub = joint_subgraph(t)
    assert sub.param == "instruction, suffix, tidy.code"
    assert set(sub.variables) == {"instruction", "suffix", "tidy.code"}
    assert sub.variables["tidy.code"].startswith("def tidy(reply, suffix):")
    assert sub.code == (
        "prompt1 = prompt(question=prompt1.question, instruction=instruction)",
        "answer2 = answer(text=prompt1)",
        "tidy5 = tidy(reply=answer2, suffix=suffix)",
    )
    assert sub.documentation == {
        "prompt": "Build the prompt.",
        "answer": "Fake model.",
        "tidy": "Tidy the reply.",
    }
    # the parameters are variables, not inputs
    assert sub.inputs == {"prompt1.question": "What is 2+2?"}
    assert set(sub.others) == {"prompt1", "answer2"}
    assert sub.outputs == {"tidy5": out}
    assert sub.feedback == "expected '4'"


def test_named_parameters_only():
    t, out = _run()
    backward(out, 0.0, trace=t)
    sub = joint_subgraph(t, params=["suffix", "not-in-trace"])
    assert sub.param == "suffix"
    assert sub.variables == {"suffix": "!!"}
    assert sub.code == ("tidy5 = tidy(reply=answer2, suffix=suffix)",)
    # parameters left out show up as inputs of the subgraph
    assert set(sub.inputs) == {"answer2", "tidy.code"}
    assert sub.feedback == "score: 0.0"


def test_agrees_with_backward_for_a_single_parameter():
    t, out = _run()
    graphs = backward(out, "too long", trace=t)
    assert joint_subgraph(t, params=["instruction"]) == graphs["instruction"]


def test_default_output_without_feedback_is_the_last_node():
    instruction = param("Say hi.", name="instruction")
    with trace() as t:
        first = prompt("q", instruction.value)
        side(first)  # the last node; reached from the instruction through prompt
    sub = joint_subgraph(t)
    assert sub.outputs == {"side2": "SAY HI.\nQ: Q"}
    assert sub.feedback == ""
    assert sub.code[-1] == "side2 = side(text=prompt1)"


def test_explicit_output_and_its_own_feedback():
    t, out = _run()
    backward(out, "final is wrong", trace=t)
    backward(t.nodes[1], "prompt is odd", trace=t)
    sub = joint_subgraph(t, output=1)
    assert sub.param == "instruction"
    assert sub.feedback == "prompt is odd"
    assert sub.outputs == {"prompt1": "Answer briefly.\nQ: What is 2+2?"}
    # by default the last feedback's output is used
    assert joint_subgraph(t).outputs == {"prompt1": "Answer briefly.\nQ: What is 2+2?"}


def test_no_parameter_reaches_the_output():
    with trace() as t:
        side("plain input")
    sub = joint_subgraph(t)
    assert sub.param == "" and sub.variables == {} and sub.code == () and sub.nodes == ()
    assert sub.outputs == {"side0": "PLAIN INPUT"}


def test_error_output_and_loaded_trace():
    @node
    def boom(text):
        raise ValueError("bad prompt")

    instruction = param("x y", name="instruction")
    with trace() as t, pytest.raises(ValueError):
        boom(prompt("q", instruction.value))
    backward(t.nodes[-1], ValueError("bad prompt"), trace=t)
    loaded = Trace.from_dict(t.to_dict())
    for source in (t, loaded):
        sub = joint_subgraph(source)
        assert sub.outputs == {"boom2": "ValueError: bad prompt"}
        assert sub.feedback == "ValueError: bad prompt"
        assert sub.variables == {"instruction": "x y"}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="no nodes"):
        joint_subgraph(Trace())
    t, _ = _run()
    with pytest.raises(ConfigError, match="not a node"):
        joint_subgraph(t, output=99)
