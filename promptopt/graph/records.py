"""The readable, JSON-able form of a trace's nodes and feedback, and safe value serialisation.

While a workflow runs, the tracer keeps raw Python objects (arguments and outputs
by reference); they become :class:`TraceNode` views only when someone reads,
exports or stores the trace. :func:`plain` turns any value into JSON data: JSON
types pass through, containers are walked (to a depth and size limit), pydantic
models and dataclasses are dumped, and anything else becomes its ``repr``
(truncated). Non-finite floats become strings, so that a stored trace reads back
equal to the one written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from promptopt.text import clip

__all__ = ["Feedback", "TraceNode", "plain"]

_MAX_DEPTH = 6
_MAX_ITEMS = 200
_MAX_TEXT = 4000
# stored traces say how long a cut text was (their format: keep it)
_CUT = "... [{total} chars]"


def _clip(text: str) -> str:
    return clip(text, _MAX_TEXT, marker=_CUT)


def plain(value: Any, *, depth: int = 0) -> Any:
    """``value`` as JSON data (str, int, float, bool, None, list, dict with str keys)."""
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) else _clip(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= _MAX_DEPTH:
        return _clip(repr(value))
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value) if not isinstance(value, set | frozenset) else sorted(value, key=repr)
        return [plain(item, depth=depth + 1) for item in items[:_MAX_ITEMS]]
    if isinstance(value, dict):
        return {
            str(key): plain(item, depth=depth + 1) for key, item in list(value.items())[:_MAX_ITEMS]
        }
    peek = getattr(value, "peek", None)
    if callable(peek) and hasattr(value, "kind") and hasattr(value, "name"):  # a Param
        return plain(peek(), depth=depth + 1)
    if hasattr(value, "model_dump"):
        try:
            return plain(value.model_dump(mode="json"), depth=depth + 1)
        except Exception:  # a broken model still gets shown, as its repr
            return _clip(repr(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth=depth + 1
        )
    try:
        return _clip(repr(value))
    except Exception as exc:  # a repr that raises must not break the trace
        return f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One node of a trace: a parameter leaf (``kind="param"``) or one traced call (``"op"``).

    ``sources`` maps an input name to the node index (or indices, for a container)
    that produced it; ``parents`` lists every node it depends on, in order;
    ``within`` is the node whose body made this call (nested nodes), if any.
    """

    index: int
    kind: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    parents: tuple[int, ...] = ()
    start_ns: int = 0
    duration_ns: int = 0
    error: str | None = None
    llm_calls: tuple[dict[str, Any], ...] = ()
    within: int | None = None
    doc: str = ""
    trainable: bool = False
    param_kind: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "inputs": self.inputs,
            "sources": self.sources,
            "output": self.output,
            "parents": list(self.parents),
            "start_ns": self.start_ns,
            "duration_ns": self.duration_ns,
            "error": self.error,
            "llm_calls": list(self.llm_calls),
            "within": self.within,
            "doc": self.doc,
            "trainable": self.trainable,
            "param_kind": self.param_kind,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceNode:
        return cls(
            index=int(data["index"]),
            kind=str(data["kind"]),
            name=str(data["name"]),
            inputs=dict(data.get("inputs") or {}),
            sources=dict(data.get("sources") or {}),
            output=data.get("output"),
            parents=tuple(int(p) for p in data.get("parents") or ()),
            start_ns=int(data.get("start_ns") or 0),
            duration_ns=int(data.get("duration_ns") or 0),
            error=data.get("error"),
            llm_calls=tuple(data.get("llm_calls") or ()),
            within=data.get("within"),
            doc=str(data.get("doc") or ""),
            trainable=bool(data.get("trainable")),
            param_kind=data.get("param_kind"),
            description=str(data.get("description") or ""),
        )


@dataclass(frozen=True, slots=True)
class Feedback:
    """Feedback attached to one output node: a score, a text, or an error."""

    output: int
    kind: str  # "score" | "text" | "error"
    value: Any

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "kind": self.kind, "value": self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feedback:
        return cls(output=int(data["output"]), kind=str(data["kind"]), value=data["value"])

    def text(self) -> str:
        """The feedback as one line for an optimizer prompt."""
        if self.kind == "score":
            return f"score: {self.value}"
        return str(self.value)
