"""Find the trainable parameters a workflow module declares.

A task file's Python ``entry`` names a function in a module; every module-level
:class:`~promptopt.graph.Param` of that module and the code parameter of every
``@node(trainable=True)`` function it defines or imports become the candidate
that optimizers edit. Names must be unique: two different parameters under one
name would make a candidate ambiguous.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from promptopt.errors import ConfigError
from promptopt.graph.nodes import Op
from promptopt.graph.params import Param

__all__ = ["params_of"]


def params_of(namespace: ModuleType | dict[str, Any]) -> dict[str, Param]:
    """The trainable parameters of a module (or a dict of names), in definition order."""
    names = vars(namespace) if isinstance(namespace, ModuleType) else namespace
    found: dict[str, Param] = {}
    for value in list(names.values()):
        param: Param | None
        if isinstance(value, Param):
            param = value
        else:
            op = getattr(value, "__promptopt_op__", None)
            param = op.param if isinstance(op, Op) else None
        if param is None or not param.trainable:
            continue
        seen = found.get(param.name)
        if seen is not None and seen is not param:
            raise ConfigError(
                f"two different parameters are named {param.name!r}; give each a unique name="
            )
        found[param.name] = param
    return found
