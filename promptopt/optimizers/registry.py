"""Find optimizers by name through the ``promptopt.optimizers`` entry-point group.

Built-in optimizers are registered in ``pyproject.toml`` exactly as a third-party
package would register its own, so the plugin path is the only path. The group is
read once per process (scanning every installed distribution's metadata took
about 80 ms, three times per task file); a plugin installed later is seen by the
next process.
"""

from __future__ import annotations

import functools
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from promptopt.errors import OptimizerError

__all__ = ["GROUP", "available", "get"]

GROUP = "promptopt.optimizers"

# Used only when the package runs from a source tree that was never installed,
# so no entry points exist; an installed promptopt always goes through entry points.
_SOURCE_TREE_FALLBACK = {
    "exemplars": "promptopt.optimizers.exemplars:Exemplars",
    "mcts": "promptopt.optimizers.mcts:MCTS",
    "opro": "promptopt.optimizers.opro:OPRO",
    "optoprime": "promptopt.optimizers.optoprime:OptoPrime",
    "promst": "promptopt.optimizers.promst:PROMST",
    "spo": "promptopt.optimizers.spo:SPO",
}


def _targets() -> dict[str, str]:
    return dict(_installed())


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    return tuple((found or _SOURCE_TREE_FALLBACK).items())


def available() -> list[str]:
    """Names of every registered optimizer, sorted."""
    return sorted(_targets())


def get(name: str) -> Any:
    """The optimizer class registered as ``name``; raises OptimizerError if unknown."""
    targets = _targets()
    if name not in targets:
        raise OptimizerError(
            f"unknown optimizer {name!r}; registered: {', '.join(sorted(targets))}"
        )
    module_name, _, attr = targets[name].partition(":")
    try:
        return getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise OptimizerError(
            f"optimizer {name!r} could not be loaded from {targets[name]!r}: {exc}"
        ) from exc
