"""The public names of promptopt.graph are the ones its docs promise."""

from __future__ import annotations

import promptopt.graph as graph


def test_public_names():
    assert set(graph.__all__) == {
        "Call", "Feedback", "Op", "Param", "ParamKind", "Subgraph", "Trace", "TraceNode",
        "backward", "current_node", "current_trace", "node", "op_of", "param", "params_of",
        "record_llm_call", "to_dot", "to_html", "to_networkx", "trace",
    }  # fmt: skip
    assert all(hasattr(graph, name) for name in graph.__all__)


def test_store_imports_without_graph_first():
    import subprocess
    import sys

    code = "import promptopt.store, promptopt.graph; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
