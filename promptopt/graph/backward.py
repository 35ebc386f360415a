"""``backward``: attach feedback to an output and hand each trainable parameter its subgraph.

The subgraph of a parameter is every node on a path from it to the output. It is
returned as a :class:`Subgraph` whose sections are what OptoPrime shows its
optimizer model: code lines in topological order (``y = fn(arg=x, ...)``), the
documentation of each function, the trainable variables (code as source), inputs
(values entering the subgraph from outside it), others (intermediate values),
outputs, and the feedback. :func:`joint_subgraph` gives one such view covering
every trainable parameter at once, for an optimizer that edits them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from promptopt.errors import ConfigError
from promptopt.graph.records import Feedback, TraceNode
from promptopt.graph.tracer import Trace, current_trace

__all__ = ["Subgraph", "backward", "feedback_of", "joint_subgraph"]


@dataclass(frozen=True, slots=True)
class Subgraph:
    """The part of one trace that links one parameter to one output, in OptoPrime's sections."""

    param: str
    nodes: tuple[int, ...]
    code: tuple[str, ...]
    documentation: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": self.param, "nodes": list(self.nodes), "code": list(self.code),
            "documentation": self.documentation, "variables": self.variables,
            "inputs": self.inputs, "others": self.others, "outputs": self.outputs,
            "feedback": self.feedback,
        }  # fmt: skip


def feedback_of(value: Any, *, output: int) -> Feedback:
    """``value`` (a score, a text or an exception) as :class:`Feedback` on node ``output``."""
    if isinstance(value, BaseException):
        return Feedback(output=output, kind="error", value=f"{type(value).__name__}: {value}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Feedback(output=output, kind="score", value=float(value))
    if isinstance(value, str):
        return Feedback(output=output, kind="text", value=value)
    raise ConfigError(f"feedback must be a score, a text or an exception, got {value!r}")


def _var(node: TraceNode) -> str:
    return node.name if node.kind == "param" else f"{node.name}{node.index}"


def _ancestors(nodes: list[TraceNode], start: int) -> set[int]:
    seen, todo = {start}, [start]
    while todo:
        for parent in nodes[todo.pop()].parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _subgraph(
    nodes: list[TraceNode], param: int | Sequence[int], out: int, members: set[int], fb: str
) -> Subgraph:
    # members: ancestors of the output; keep those that descend from the param(s)
    leaves = [param] if isinstance(param, int) else list(param)
    on_path = set(leaves)
    for node in nodes:  # index order is topological
        if node.index in members and any(p in on_path for p in node.parents):
            on_path.add(node.index)
    code, docs, inputs, others = [], {}, {}, {}
    for index in sorted(on_path):
        node = nodes[index]
        if node.kind == "param":
            continue
        args = []
        for name, value in node.inputs.items():
            source = node.sources.get(name)
            if source is None:
                var = f"{_var(node)}.{name}"
                inputs[var] = value
            elif isinstance(source, list):
                var = "[" + ", ".join(_var(nodes[s]) for s in source) + "]"
            else:
                var = _var(nodes[source])
            args.append(f"{name}={var}")
        for parent in node.parents:
            if parent not in on_path:
                inputs[_var(nodes[parent])] = nodes[parent].output
        code.append(f"{_var(node)} = {node.name}({', '.join(args)})")
        if node.doc:
            docs[node.name] = node.doc
        if index != out:
            others[_var(node)] = node.output
    last = nodes[out]
    return Subgraph(
        param=", ".join(nodes[i].name for i in leaves),
        nodes=tuple(sorted(on_path)),
        code=tuple(code),
        documentation=docs,
        variables={nodes[i].name: nodes[i].output for i in leaves},
        inputs=inputs,
        others=others,
        outputs={_var(last): last.output if last.error is None else last.error},
        feedback=fb,
    )


def backward(output: Any, feedback: Any, *, trace: Trace | None = None) -> dict[str, Subgraph]:
    """Attach ``feedback`` to ``output``; return each trainable parameter's subgraph by name.

    ``output`` is a value a node returned (found by identity), the exception a node
    raised, or a :class:`TraceNode`. ``trace`` defaults to the running trace.
    """
    trace = trace if trace is not None else current_trace()
    if trace is None:
        raise ConfigError("backward needs a trace: pass trace=, or call it inside `with trace()`")
    nodes = trace.nodes
    index = output.index if isinstance(output, TraceNode) else trace.find(output)
    if index is None or not 0 <= index < len(nodes):
        raise ConfigError(f"output {output!r} was not produced by a node of trace {trace.id!r}")
    fb = feedback_of(feedback, output=index)
    trace.feedback.append(fb)
    members = _ancestors(nodes, index)
    return {
        nodes[i].name: _subgraph(nodes, i, index, members, fb.text())
        for i in sorted(members)
        if nodes[i].kind == "param" and nodes[i].trainable
    }


def joint_subgraph(
    trace: Trace, *, output: int | None = None, params: Sequence[str] | None = None
) -> Subgraph:
    """One :class:`Subgraph` linking every trainable parameter (or those named) to one output.

    ``output`` is a node index; by default the output of the trace's last feedback,
    else its last node. The feedback is the text of the last feedback attached to
    that output (empty if none). ``param`` joins the names of the parameters that
    reach the output, in index order, with ``", "``; ``variables`` holds all their
    values. Named parameters that do not reach the output are left out; with none
    left the subgraph holds no node and no code, only the output and its feedback.
    """
    nodes = trace.nodes
    if not nodes:
        raise ConfigError(f"trace {trace.id!r} has no nodes")
    if output is None:
        output = trace.feedback[-1].output if trace.feedback else len(nodes) - 1
    if not 0 <= output < len(nodes):
        raise ConfigError(f"output {output!r} is not a node of trace {trace.id!r}")
    wanted = None if params is None else set(params)
    members = _ancestors(nodes, output)
    leaves = [
        i
        for i in sorted(members)
        if nodes[i].kind == "param"
        and (nodes[i].name in wanted if wanted is not None else nodes[i].trainable)
    ]
    fb = next((f.text() for f in reversed(trace.feedback) if f.output == output), "")
    return _subgraph(nodes, leaves, output, members, fb)
