"""Tracing: nodes, params, edges by identity, errors, nesting, LLM call hook."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError
from promptopt.graph import (
    current_node,
    current_trace,
    node,
    op_of,
    param,
    record_llm_call,
    trace,
)


@node
def greet(name, greeting):
    """Say hello."""
    return f"{greeting}, {name}!"


@node(name="shout")
def loud(text):
    return text.upper()


@node(trainable=True)
def exclaim(text):
    """Add emphasis."""
    return text + "!!"


@node
def fail(text):
    raise ValueError(f"bad {text}")


def test_outside_a_trace_nodes_just_run():
    assert loud("hi") == "HI"
    assert current_trace() is None and current_node() is None


def test_a_run_records_nodes_params_and_edges():
    style = param("Hello there", name="greeting", description="how to greet")
    with trace(name="demo") as t:
        out = exclaim(loud(greet("bob", style.value)))
    nodes = t.nodes
    kinds = [(n.kind, n.name) for n in nodes]
    assert kinds == [("param", "greeting"), ("op", "greet"), ("op", "shout"),
                     ("param", "exclaim.code"), ("op", "exclaim")]  # fmt: skip
    greet_node, shout_node, exclaim_node = nodes[1], nodes[2], nodes[4]
    assert greet_node.inputs == {"name": "bob", "greeting": "Hello there"}
    assert greet_node.sources == {"greeting": 0}
    assert shout_node.parents == (1,)
    assert exclaim_node.parents == (2, 3)
    assert exclaim_node.output == out == "HELLO THERE, BOB!!!"
    assert greet_node.doc == "Say hello."
    assert nodes[3].output.startswith("def exclaim(text):") and "@node" not in nodes[3].output
    assert all(n.duration_ns >= 0 for n in nodes)
    assert nodes[0].description == "how to greet" and nodes[0].trainable


def test_shared_small_values_do_not_make_false_edges():
    @node
    def one():
        return 1

    @node
    def add(a, b):
        return f"{a}{b}"

    with trace() as t:
        one()
        add(1, "x" * 3)
    assert t.nodes[1].parents == ()


def test_a_param_passed_as_itself_is_a_parent():
    @node
    def use(p):
        return p.peek() + " used"

    p = param("value", name="p")
    with trace() as t:
        use(p)
    assert [n.name for n in t.nodes] == ["p", "use"]
    assert t.nodes[1].parents == (0,)


def test_container_items_link_to_their_producers():
    @node
    def join(parts):
        return " ".join(parts)

    with trace() as t:
        a, b = loud("ab"), loud("cd")
        join([a, b, "raw"])
    assert t.nodes[2].sources == {"parts": [0, 1]}
    assert t.nodes[2].parents == (0, 1)


def test_exceptions_are_kept_and_reraised():
    with trace() as t, pytest.raises(ValueError, match="bad x"):
        fail("xx")
    assert t.nodes[0].error == "ValueError: bad xx"
    assert t.find(t.calls()[0].error) == 0


def test_nested_nodes_record_the_enclosing_node():
    @node
    def outer(text):
        return loud(text) + "?"

    with trace() as t:
        outer("hey")
    inner, out = t.nodes
    assert inner.name == "shout" and inner.within == 1 and out.within is None


async def test_async_nodes_are_traced():
    @node
    async def fetch(text):
        return text * 2

    async with trace() as t:
        out = await fetch("ab")
        loud(out)
    assert [n.name for n in t.nodes] == ["fetch", "shout"]
    assert t.nodes[1].parents == (0,)


def test_llm_calls_attach_to_the_running_node():
    @node
    def ask(question):
        assert record_llm_call({"model": "fake", "text": "42"})
        return "answer"

    with trace() as t:
        ask("why")
    assert record_llm_call({"x": 1}) is False
    assert t.nodes[0].llm_calls == ({"model": "fake", "text": "42"},)


def test_misuse_is_a_config_error():
    with pytest.raises(ConfigError, match="name"):
        param("x", name="")
    with pytest.raises(ConfigError, match="kind"):
        param("x", name="p", kind="weights")
    with pytest.raises(ConfigError, match="not a @node"):
        op_of(len)
    t = trace()
    with t, pytest.raises(ConfigError, match="entered twice"), t:
        pass
    assert op_of(exclaim).param is not None and op_of(loud).name == "shout"


@pytest.mark.parametrize("missing", [False, True])
def test_a_trainable_node_whose_source_cannot_be_read_is_a_config_error(tmp_path, missing):
    # Code compiled under a file name whose lines are not its source (an existing, unrelated
    # file) or under no real file at all: inspect fails either way, and the user learns why.
    other = tmp_path / "unrelated.md"
    other.write_text("text (with an open parenthesis\n" * 3)
    filename = str(tmp_path / "gone.py") if missing else str(other)
    code = "from promptopt.graph import node\n@node(trainable=True)\ndef f(x):\n    return x\n"
    with pytest.raises(ConfigError, match="define it in a file"):
        exec(compile(code, filename, "exec"), {})
