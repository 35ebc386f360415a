"""A trace as a ``networkx.DiGraph``: one graph node per trace node, edges parent -> child."""

from __future__ import annotations

from typing import Any

from promptopt.graph.tracer import Trace

__all__ = ["to_networkx"]


def to_networkx(trace: Trace) -> Any:
    """``trace`` as a ``networkx.DiGraph``; node attributes are the fields of ``TraceNode``,
    edge attributes name the inputs (``args``) that carry the dependency."""
    import networkx as nx

    graph = nx.DiGraph(id=trace.id, name=trace.name, meta=trace.meta,
                       feedback=[f.to_dict() for f in trace.feedback])  # fmt: skip
    nodes = trace.nodes
    for node in nodes:
        data = node.to_dict()
        del data["index"], data["parents"]
        graph.add_node(node.index, **data)
    for node in nodes:
        for parent in node.parents:
            args = [
                name for name, source in node.sources.items()
                if source == parent or (isinstance(source, list) and parent in source)
            ]  # fmt: skip
            graph.add_edge(parent, node.index, args=args)
    return graph
