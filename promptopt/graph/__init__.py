"""The traced computation graph: ``param``, ``@node``, ``trace()``, ``backward`` and exports.

A run of a workflow on one example inside ``with trace() as t:`` records one DAG
of node executions (inputs, output, timing, exception, LLM calls, parents by data
dependency). ``backward(output, feedback, trace=t)`` hands every trainable
parameter the subgraph linking it to the output. ``to_networkx``, ``Trace.to_dict``,
``to_dot`` and ``to_html`` export it (``promptopt.report.graphs.write_graph``
draws a stored one to a file). Tracing state lives in a ``ContextVar``; this
package imports nothing from ``promptopt.llm`` or the optimizers.
"""

from promptopt.graph.backward import Subgraph, backward
from promptopt.graph.calls import Call
from promptopt.graph.discover import params_of
from promptopt.graph.export import to_networkx
from promptopt.graph.nodes import Op, node, op_of
from promptopt.graph.params import Param, ParamKind, param
from promptopt.graph.records import Feedback, TraceNode
from promptopt.graph.render import to_dot, to_html
from promptopt.graph.tracer import Trace, current_node, current_trace, record_llm_call, trace

__all__ = [
    "Call",
    "Feedback",
    "Op",
    "Param",
    "ParamKind",
    "Subgraph",
    "Trace",
    "TraceNode",
    "backward",
    "current_node",
    "current_trace",
    "node",
    "op_of",
    "param",
    "params_of",
    "record_llm_call",
    "to_dot",
    "to_html",
    "to_networkx",
    "trace",
]
