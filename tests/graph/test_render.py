"""Rendering a stored trace: HTML with inline SVG, SVG, DOT; choosing the example."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import pytest

from promptopt.errors import ConfigError, StoreError
from promptopt.graph import node, param, trace
from promptopt.graph.backward import backward
from promptopt.graph.layout import layout
from promptopt.graph.render import to_dot
from promptopt.report.graphs import write_graph
from promptopt.store import RunStore


@node
def draft(question, style):
    """Write a draft <answer>."""
    return f"{style}: {question}"


@node(trainable=True)
def polish(text):
    return text.strip() + " & done"


@node
def crash(text):
    raise KeyError(text)


def _store(tmp_path):
    style = param("Be <terse>", name="style")
    store = RunStore.create(tmp_path, task={"name": "t"}, run_id="run1")
    for example in range(2):
        with trace(name=f"ex{example}") as t:
            out = polish(draft(f"q{example}?", style.value))
            with contextlib.suppress(KeyError):
                crash(out)
        backward(out, 1.0, trace=t)
        store.add_trace(t, example_id=str(example))
    store.close()
    return tmp_path / "run1"


def test_html_is_self_contained_and_readable(tmp_path):
    run = _store(tmp_path)
    path = write_graph(run, example=1)
    assert path == run / "graph-1.html"
    page = path.read_text()
    assert "<svg" in page and "ex1" in page and "q1?" in page and "&lt;terse&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no outside assets
    assert "KeyError" in page and "score on node" in page


def test_svg_parses_and_edges_point_down(tmp_path):
    run = _store(tmp_path)
    path = write_graph(run, fmt="svg", out=tmp_path / "g.svg")
    root = ET.fromstring(path.read_text())
    assert root.tag.endswith("svg")
    with RunStore.open(run) as store:
        nodes = store.traces()[0].nodes
    boxes = layout(nodes)
    assert all(boxes[p].y < boxes[n.index].y for n in nodes for p in n.parents)


def test_dot_and_errors(tmp_path):
    run = _store(tmp_path)
    dot = write_graph(run, fmt="dot").read_text()
    assert dot.startswith('digraph "ex0"') and "n1 -> n3;" in dot
    with RunStore.open(run) as store:
        assert to_dot(store.traces()[1]) != dot
    with pytest.raises(ConfigError, match="examples: \\['0', '1'\\]"):
        write_graph(run, example=7)
    with pytest.raises(ConfigError, match="format"):
        write_graph(run, fmt="png")
    RunStore.create(tmp_path, task={"name": "t"}, run_id="empty").close()
    with pytest.raises(StoreError, match="no traces"):
        write_graph(tmp_path / "empty")


def test_cli_graph_writes_the_picture(tmp_path, capsys):
    from promptopt.cli import main

    run = _store(tmp_path)
    assert main(["graph", str(run), "--example", "1", "--format", "svg"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (run / "graph-1.svg").read_text().lstrip().startswith("<")
    assert main(["graph", str(run), "--example", "nope"]) == 2
