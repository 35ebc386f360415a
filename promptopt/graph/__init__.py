"""The traced computation graph: ``param``, ``@node``, ``trace()``, ``backward`` and exports.

A run of a workflow on one example inside ``with trace() as t:`` records one DAG
of node executions (inputs, output, timing, exception, LLM calls, parents by data
dependency). ``backward(output, feedback, trace=t)`` hands every trainable
parameter the subgraph linking it to the output. Tracing state lives in a
``ContextVar``; this package imports nothing from ``promptopt.llm`` or the
optimizers.
"""

from promptopt.graph.nodes import Op, node, op_of
from promptopt.graph.params import Param, ParamKind, param
from promptopt.graph.records import Feedback, TraceNode
from promptopt.graph.tracer import Call, Trace, current_node, current_trace, record_llm_call, trace

__all__ = [
    "Call",
    "Feedback",
    "Op",
    "Param",
    "ParamKind",
    "Trace",
    "TraceNode",
    "current_node",
    "current_trace",
    "node",
    "op_of",
    "param",
    "record_llm_call",
    "trace",
]
