"""Plugins found by name through entry-point groups; promptopt's own are registered the same way.

Built-in optimizers are entry points in ``pyproject.toml`` exactly as a
third-party package registers its own, so the plugin path is the only path (a
source tree that was never installed has none: ``pip install -e .``). A group is
read once per process (scanning every installed distribution's metadata took
about 80 ms, three times per task file); a plugin installed later is seen by
the next process.

This module sits at the bottom of the layers with :mod:`promptopt.errors`: it
imports a plugin only when asked for it by name, so any layer may look one up
(the task loader checks a task file's optimizer names here) without depending
on the layer the plugin lives in.
"""

from __future__ import annotations

import functools
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from promptopt.errors import OptimizerError, PromptoptError

__all__ = ["OPTIMIZERS", "Registry", "optimizers"]

OPTIMIZERS = "promptopt.optimizers"


@functools.cache
def _targets(group: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((ep.name, ep.value) for ep in entry_points(group=group)))


class Registry:
    """The plugins of one entry-point group, each a ``module:attribute`` loaded on request."""

    def __init__(self, group: str, *, kind: str, error: type[PromptoptError]) -> None:
        self.group = group
        self.kind = kind
        self._error = error

    def targets(self) -> dict[str, str]:
        """Every registered name and its ``module:attribute``."""
        return dict(_targets(self.group))

    def available(self) -> list[str]:
        """Names of every registered plugin, sorted."""
        return sorted(self.targets())

    def get(self, name: str) -> Any:
        """The object registered as ``name``; raises this registry's error if unknown."""
        targets = self.targets()
        if name not in targets:
            listed = ", ".join(sorted(targets)) or f"none (no {self.group!r} entry points)"
            raise self._error(f"unknown {self.kind} {name!r}; registered: {listed}")
        module_name, _, attr = targets[name].partition(":")
        try:
            return getattr(import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise self._error(
                f"{self.kind} {name!r} could not be loaded from {targets[name]!r}: {exc}"
            ) from exc


optimizers = Registry(OPTIMIZERS, kind="optimizer", error=OptimizerError)
