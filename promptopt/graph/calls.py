"""One recorded call: the plain list the hot path fills, and the read-only view of it.

A call record is a plain list (the cheapest mutable record CPython builds); the
tracer (:mod:`.tracer`) and ``@node`` (:mod:`.nodes`) fill it while the workflow
runs, and :mod:`.views` reads it through :class:`Call` when the trace is read.
:func:`linkable` says which values are safe to link by identity.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARGS", "END_NS", "ERROR", "KWARGS", "LLM_CALLS", "OP", "OUTPUT", "START_NS", "WITHIN",
    "Call", "linkable", "new_record",
]  # fmt: skip

_UNLINKED = frozenset({type(None), bool, type(...), type(NotImplemented)})
_EMPTY_SHARED = frozenset({tuple, bytes, frozenset})


def linkable(value: Any) -> bool:
    """Whether ``value`` is safe to link by identity (not a value CPython shares)."""
    kind = type(value)
    if kind is str:
        return len(value) > 1
    if kind is int:
        return not -5 <= value <= 256
    if kind in _UNLINKED:
        return False
    if kind in _EMPTY_SHARED:
        return len(value) > 0
    return True


# A call record's layout:
OP, ARGS, KWARGS, WITHIN, OUTPUT, ERROR, START_NS, END_NS, LLM_CALLS = range(9)


def new_record(
    op: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, within: Any
) -> list[Any]:
    """A record of one call: ``[op, args, kwargs, within, output, error, start, end, llm_calls]``."""
    return [op, args, kwargs, within, None, None, 0, 0, None]


class Call:
    """A read-only view of one recorded call (raw values, kept by reference).

    ``op`` is the node's ``Op``, or a ``Param`` for a parameter leaf. Nothing but
    the record is made while the workflow runs: parents, indices and names are
    derived when the trace is read (:mod:`promptopt.graph.views`).
    """

    __slots__ = ("_record",)

    def __init__(self, record: list[Any]) -> None:
        self._record = record

    key = property(lambda self: id(self._record), doc="Identifies the record (for ``within``).")
    op = property(lambda self: self._record[OP])
    args = property(lambda self: self._record[ARGS])
    kwargs = property(lambda self: self._record[KWARGS])
    output = property(lambda self: self._record[OUTPUT])
    error = property(lambda self: self._record[ERROR])
    start_ns = property(lambda self: self._record[START_NS])
    end_ns = property(lambda self: self._record[END_NS])
    llm_calls = property(lambda self: self._record[LLM_CALLS])

    @property
    def within(self) -> Call | None:
        """The call whose body made this call, if any."""
        outer = self._record[WITHIN]
        return None if outer is None else Call(outer)

    def __repr__(self) -> str:
        return f"Call(op={self.op!r}, output={self.output!r})"
