"""Trainable parameters: the leaves of the traced graph that an optimizer may rewrite.

A :class:`Param` holds one value (prompt text, an exemplar list, or a function's
source code) under a name. Reading ``param.value`` inside a running trace records
the parameter as a leaf node of that trace and remembers the value's identity, so
that a node later called with that value (or with the ``Param`` itself) gets the
parameter as its parent. A trace started with ``values={name: value}`` (the
engine does this for every candidate) makes ``.value`` return that value instead
of the parameter's own, for that run only: concurrent runs of different
candidates never see each other's values, and the ``Param`` is never mutated.
Outside a trace, reading ``.value`` costs one ``ContextVar.get``.
"""

from __future__ import annotations

import enum
from typing import Any

from promptopt.errors import ConfigError
from promptopt.graph.state import STATE

__all__ = ["Param", "ParamKind", "param"]


class ParamKind(enum.StrEnum):
    """What a parameter's value is; an optimizer picks its edit strategy from it."""

    TEXT = "text"
    EXEMPLARS = "exemplars"
    CODE = "code"


class Param:
    """One trainable value with a name; read it through ``.value``."""

    __slots__ = ("_value", "description", "kind", "name", "trainable", "__weakref__")

    def __init__(
        self,
        value: Any,
        *,
        name: str,
        description: str = "",
        kind: ParamKind | str = ParamKind.TEXT,
        trainable: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a param needs a non-empty name, got {name!r}")
        try:
            self.kind = ParamKind(kind)
        except ValueError:
            choices = ", ".join(repr(k.value) for k in ParamKind)
            raise ConfigError(f"param {name!r} has kind {kind!r}; use one of {choices}") from None
        self._value = value
        self.name = name
        self.description = description
        self.trainable = trainable

    @property
    def value(self) -> Any:
        """The value in effect: the running trace's value for this name, else its own."""
        state = STATE.get()
        if state is None:
            return self._value
        return state[0].use_param(self)

    @value.setter
    def value(self, new: Any) -> None:
        self._value = new

    def peek(self) -> Any:
        """The current value, without recording anything in the running trace."""
        return self._value

    def __repr__(self) -> str:
        return f"Param(name={self.name!r}, kind={self.kind.value!r}, value={self._value!r})"


def param(
    value: Any,
    *,
    name: str,
    description: str = "",
    kind: ParamKind | str = ParamKind.TEXT,
) -> Param:
    """A trainable parameter: ``kind`` is ``"text"``, ``"exemplars"`` or ``"code"``."""
    return Param(value, name=name, description=description, kind=kind)
