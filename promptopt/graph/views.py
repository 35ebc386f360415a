"""Turning a live :class:`~promptopt.graph.calls.Call` into its readable :class:`TraceNode`.

This is the lazy half of tracing: names of arguments are bound through the
function's signature, values are serialised with :func:`plain`, exceptions and LLM
call events become short dicts, only when a trace is read, exported or stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from promptopt.graph.calls import Call, linkable
from promptopt.graph.params import Param
from promptopt.graph.records import TraceNode, plain

__all__ = ["llm_call_dict", "views"]

_EVENT_FIELDS = ("key", "provider", "model", "cached", "error", "attempts", "duration_s")


def llm_call_dict(event: Any) -> dict[str, Any]:
    """The readable fields of an LLM call event (``promptopt.llm`` ``CallEvent`` or a dict)."""
    if isinstance(event, dict):
        return plain(event)
    out: dict[str, Any] = {f: plain(getattr(event, f, None)) for f in _EVENT_FIELDS}
    response = getattr(event, "response", None)
    out["text"] = plain(getattr(response, "text", None))
    usage = getattr(response, "usage", None)
    out["prompt_tokens"] = getattr(usage, "prompt_tokens", 0) if usage else 0
    out["completion_tokens"] = getattr(usage, "completion_tokens", 0) if usage else 0
    request = getattr(event, "request", None)
    messages = getattr(request, "messages", None)
    if messages is not None:
        out["messages"] = plain(messages)
    return out


def _error(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"


def _leaf(param: Param, value: Any, *, index: int, at_ns: int) -> TraceNode:
    return TraceNode(
        index=index,
        kind="param",
        name=param.name,
        output=plain(value),
        start_ns=at_ns,
        trainable=param.trainable,
        param_kind=param.kind.value,
        description=param.description,
    )


class _Producers:
    """Who produced which object (by identity), with when it finished, in completion order."""

    def __init__(self) -> None:
        self._by_id: dict[int, list[tuple[int, int]]] = {}

    def add(self, value: Any, *, index: int, end_ns: int) -> None:
        if linkable(value):
            self._by_id.setdefault(id(value), []).append((end_ns, index))

    def latest(self, value: Any, *, start_ns: int) -> int | None:
        """The latest producer of ``value`` that finished by ``start_ns``."""
        found = None
        for end_ns, index in self._by_id.get(id(value), ()):
            if end_ns <= start_ns:
                found = index
        return found

    def source(self, value: Any, *, start_ns: int) -> Any:
        """The producer of ``value``; for a container that was not itself produced, the
        producers of its items, one level deep (a list); else ``None``."""
        found = self.latest(value, start_ns=start_ns)
        if found is not None:
            return found
        kind = type(value)
        if kind is list or kind is tuple or kind is dict:
            items = value.values() if kind is dict else value
            inner = [self.latest(item, start_ns=start_ns) for item in items]
            return [i for i in inner if i is not None] or None
        return None


def views(
    calls: Sequence[Call],
    *,
    positions: dict[int, int] | None = None,
    value_of: Callable[[Param], Any] = Param.peek,
) -> list[TraceNode]:
    """The :class:`TraceNode` of every recorded call, indices and parents derived.

    A ``Param`` that a node received (as an argument, or as a trainable node's code)
    without reading ``.value`` in the trace gets its leaf just before that node,
    holding ``value_of(param)`` (the trace's value for it).
    ``positions``, if given, is filled with ``id(call) -> index``.
    """
    out: list[TraceNode] = []
    position: dict[int, int] = {} if positions is None else positions  # id(call) -> index
    leaves: dict[int, int] = {}  # id(param) -> index
    producers = _Producers()
    for call in calls:
        op = call.op
        if isinstance(op, Param):
            index = position[call.key] = leaves[id(op)] = len(out)
            out.append(_leaf(op, call.output, index=index, at_ns=call.start_ns))
            producers.add(op, index=index, end_ns=call.end_ns)
            producers.add(call.output, index=index, end_ns=call.end_ns)
            continue
        needed = [v for v in (*call.args, *(call.kwargs or {}).values()) if isinstance(v, Param)]
        if op.param is not None:
            needed.append(op.param)
        for param in needed:
            if id(param) not in leaves:
                index = leaves[id(param)] = len(out)
                out.append(_leaf(param, value_of(param), index=index, at_ns=call.start_ns))
                producers.add(param, index=index, end_ns=call.start_ns)
        index = position[call.key] = len(out)
        out.append(_view(call, index=index, producers=producers, leaves=leaves, position=position))
        if call.error is None:
            producers.add(call.output, index=index, end_ns=call.end_ns)
    for call in calls:  # an enclosing node finishes after the nodes it calls
        outer = call.within
        if outer is not None:
            index = position[call.key]
            out[index] = dataclasses.replace(out[index], within=position.get(outer.key))
    return out


def _view(
    call: Call,
    *,
    index: int,
    producers: _Producers,
    leaves: dict[int, int],
    position: dict[int, int],
) -> TraceNode:
    op = call.op
    kwargs = call.kwargs or {}
    names = op.arg_names(call.args, kwargs)
    values = [*call.args, *kwargs.values()]
    inputs: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    parents: list[int] = []
    for name, value in zip(names, values, strict=False):
        inputs[name] = plain(value)
        source = producers.source(value, start_ns=call.start_ns)
        if source is not None:
            sources[name] = source
    if op.param is not None:
        sources["__code__"] = leaves[id(op.param)]
    for source in sources.values():
        for parent in source if isinstance(source, list) else (source,):
            if parent not in parents:
                parents.append(parent)
    return TraceNode(
        index=index,
        kind="op",
        name=op.name,
        inputs=inputs,
        sources=sources,
        output=plain(call.output),
        parents=tuple(parents),
        start_ns=call.start_ns,
        duration_ns=call.end_ns - call.start_ns,
        error=_error(call.error),
        llm_calls=tuple(llm_call_dict(e) for e in call.llm_calls or ()),
        doc=op.doc,
        trainable=op.trainable,
    )
