"""Find optimizers by name through the ``promptopt.optimizers`` entry-point group.

The lookup itself lives in :mod:`promptopt.plugins` (the bottom layer, so the
task loader can check names without importing optimizers); this module is its
optimizer face: :func:`available` and :func:`get`.
"""

from __future__ import annotations

from typing import Any

from promptopt.plugins import OPTIMIZERS, optimizers

__all__ = ["GROUP", "available", "get"]

GROUP = OPTIMIZERS


def available() -> list[str]:
    """Names of every registered optimizer, sorted."""
    return optimizers.available()


def get(name: str) -> Any:
    """The optimizer class registered as ``name``; raises OptimizerError if unknown."""
    return optimizers.get(name)
