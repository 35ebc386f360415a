"""The per-run trace: node executions, their data dependencies, and the scope that starts one.

How dependencies are found without wrapping values. microsoft/Trace wraps every
value in a ``Node`` object, which is why it spends tens of microseconds per op.
Here the values stay plain and the hot path computes no edges at all: a call
records its arguments and output by reference and its start and end times. When
the trace is read, a node's parent for an argument is the latest node that
produced that very object (by identity) and finished before the call started;
parameters count as producers of themselves and of the value read through
``Param.value``. The trace holds every recorded output and argument, so no id can
be reused by another object while the trace lives.

Limits of linking by identity (why they are acceptable):

* Values that CPython shares between unrelated places are never linked, to avoid
  false edges: ``None``, booleans, ints in ``[-5, 256]``, empty or one-character
  strings and empty tuples/bytes. A node that returns one of these has no
  children by data; pass the ``Param`` itself, or a richer value, where the edge
  matters. A node that returns a compile-time constant (``return "yes"``) links
  a later use of the same constant object elsewhere to that node.
* A value computed from a node's output outside any node (``f"{out}!"``) is a
  new object and carries no edge: put that computation in a node.
* Containers are looked into one level deep: a list, tuple or dict argument that
  was not itself produced by a node links to the producers of its items.
* A node that returns its input unchanged becomes the producer of that value for
  later nodes (the latest producer wins), which keeps the order topological.
* Values are kept by reference and serialised only when the trace is read: a
  list mutated in place after a node returned it shows its later state.

A light proxy around outputs would remove the first limit but leak into user code
(``isinstance`` checks, ``json.dumps``, SDK calls) and cost an allocation per value;
identity lookups cost nothing while the workflow runs.

Every trace belongs to the context that started it: asyncio tasks and
``contextvars`` copies see their own trace; a plain new thread sees none. Node
indices follow completion order, which is a topological order of the data edges
(a producer finishes before its consumer starts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextvars import Token
from time import perf_counter_ns
from types import TracebackType
from typing import Any

from promptopt.errors import ConfigError
from promptopt.graph.calls import (
    END_NS,
    ERROR,
    LLM_CALLS,
    OP,
    OUTPUT,
    START_NS,
    Call,
    new_record,
)
from promptopt.graph.params import Param
from promptopt.graph.records import Feedback, TraceNode
from promptopt.graph.state import STATE
from promptopt.graph.views import views

__all__ = [
    "Trace",
    "current_node",
    "current_trace",
    "record_llm_call",
    "trace",
]


class Trace:
    """The DAG of one workflow run on one example; also the ``with`` scope that records it."""

    __slots__ = ("_calls", "_feedback", "_id", "_loaded", "_meta", "_params", "_token", "_values",
                 "name", "sandbox", "started_at")  # fmt: skip

    def __init__(
        self,
        *,
        name: str = "",
        meta: dict[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
        sandbox: Any = None,
    ) -> None:
        self.name = name
        self._values = dict(values) if values else None
        self.sandbox = sandbox  # runs proposed code of trainable nodes; None: the default Sandbox
        self.started_at = time.time()
        self._meta = meta
        self._calls: list[list[Any]] = []  # records, in completion order = index order
        self._id: str | None = None
        self._feedback: list[Feedback] | None = None
        self._params: list[Param] | None = None
        self._loaded: list[TraceNode] | None = None
        self._token: Token[Any] | None = None

    @property
    def id(self) -> str:
        """A random hex id, made on first use (the store's key for this trace)."""
        if self._id is None:
            self._id = os.urandom(8).hex()
        return self._id

    @property
    def meta(self) -> dict[str, Any]:
        """Free-form JSON data about the run (candidate, split, example id, ...)."""
        if self._meta is None:
            self._meta = {}
        return self._meta

    @property
    def feedback(self) -> list[Feedback]:
        """Feedback attached by :func:`~promptopt.graph.backward.backward`, in order."""
        if self._feedback is None:
            self._feedback = []
        return self._feedback

    # -- scope ---------------------------------------------------------------------------------

    def __enter__(self) -> Trace:
        if self._token is not None or self._loaded is not None:
            raise ConfigError(f"trace {self.name!r} cannot be entered twice; start a new trace()")
        self._token = STATE.set((self, None))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        STATE.reset(self._token)  # type: ignore[arg-type]

    async def __aenter__(self) -> Trace:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def values(self) -> dict[str, Any]:
        """Parameter values in effect for this run, by name (empty: every param's own)."""
        return dict(self._values or {})

    def value_of(self, param: Param) -> Any:
        """``param``'s value in this run: this trace's value for its name, else its own."""
        values = self._values
        if values is not None and param.name in values:
            return values[param.name]
        return param.peek()

    # -- recording -------------------------------------------------------------------------------

    def use_param(self, param: Param) -> Any:
        """Record ``param`` as a leaf of this trace (once); return its value in this run."""
        value = self.value_of(param)
        params = self._params
        if params is None:
            params = self._params = []
        elif param in params:
            return value
        params.append(param)
        leaf = new_record(param, (), None, None)
        leaf[OUTPUT] = value
        leaf[START_NS] = leaf[END_NS] = perf_counter_ns()
        self._calls.append(leaf)
        return value

    def find(self, value: Any) -> int | None:
        """The index of the latest node that produced ``value`` or raised it, if any."""
        if self._loaded is not None:
            return None
        positions: dict[int, int] = {}
        views(self.calls(), positions=positions, value_of=self.value_of)
        for record in reversed(self._calls):
            if record[OUTPUT] is value or record[ERROR] is value or record[OP] is value:
                return positions[id(record)]
        return None

    # -- reading -----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[TraceNode]:
        """Every node as a :class:`TraceNode`, in index (topological) order."""
        if self._loaded is not None:
            return list(self._loaded)
        return views(self.calls(), value_of=self.value_of)

    def calls(self) -> list[Call]:
        """The live records in index order (parameter leaves that were never read through
        ``.value`` are added by :attr:`nodes` only); empty for a loaded trace."""
        return [Call(record) for record in self._calls]

    def params(self) -> dict[str, Param]:
        """The ``Param`` objects read in this run, by name (empty for a loaded trace)."""
        return {p.name: p for p in self._params or ()}

    def __len__(self) -> int:
        return len(self._loaded) if self._loaded is not None else len(self.nodes)

    def __repr__(self) -> str:
        return f"Trace(id={self.id!r}, name={self.name!r}, nodes={len(self)})"

    # -- export --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON data that :meth:`from_dict` turns back into an equal trace."""
        return {
            "id": self.id,
            "name": self.name,
            "meta": self.meta,
            "started_at": self.started_at,
            "nodes": [node.to_dict() for node in self.nodes],
            "feedback": [fb.to_dict() for fb in self.feedback],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """A read-only trace from :meth:`to_dict` data (nodes hold JSON values)."""
        out = cls(name=str(data.get("name") or ""), meta=dict(data.get("meta") or {}))
        out._id = str(data["id"])
        out.started_at = float(data.get("started_at") or 0.0)
        out._loaded = [TraceNode.from_dict(n) for n in data.get("nodes") or ()]
        out._feedback = [Feedback.from_dict(f) for f in data.get("feedback") or ()]
        return out


trace = Trace
"""A new trace for one workflow run: ``with trace(name="qa") as t:`` (or ``async with``)."""


def current_trace() -> Trace | None:
    """The trace running in this context, or ``None``."""
    state = STATE.get()
    return None if state is None else state[0]


def current_node() -> Call | None:
    """The innermost node execution running in this context, or ``None``."""
    state = STATE.get()
    return None if state is None or state[1] is None else Call(state[1])


def record_llm_call(event: Any) -> bool:
    """Attach an LLM call event to the running node; ``False`` when no node is running.

    Suits ``LLM.add_listener(record_llm_call)``: the client calls its listeners in the
    caller's context, for sync calls too (:mod:`promptopt.aio` carries it across threads).
    """
    state = STATE.get()
    if state is None or state[1] is None:
        return False
    record = state[1]
    if record[LLM_CALLS] is None:
        record[LLM_CALLS] = []
    record[LLM_CALLS].append(event)
    return True
