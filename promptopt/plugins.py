"""Plugins found by name through entry-point groups; promptopt's own are registered the same way.

Two groups: ``promptopt.optimizers`` (optimizer classes, :data:`optimizers`) and
``promptopt.providers`` (LLM backend classes by provider name, :data:`providers`).
Built-ins are entry points in ``pyproject.toml`` exactly as a third-party package
registers its own, so the plugin path is the only path (a
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

from promptopt.errors import BackendUnavailableError, OptimizerError, PromptoptError

__all__ = ["OPTIMIZERS", "PROVIDERS", "Registry", "optimizers", "providers"]

OPTIMIZERS = "promptopt.optimizers"
_OWN = "promptopt."  # where promptopt's own plugins live
PROVIDERS = "promptopt.providers"


@functools.cache
def _targets(group: str) -> tuple[tuple[str, str], ...]:
    """(name, ``module:attribute``) of each entry point of ``group``, by name."""
    return tuple(sorted((ep.name, ep.value) for ep in entry_points(group=group)))


class Registry:
    """The plugins of one entry-point group, each a ``module:attribute`` loaded on request.

    ``error`` is raised for a name nobody registered or a plugin that is broken;
    ``missing`` for a plugin whose own dependency is not installed, naming it.
    """

    def __init__(
        self,
        group: str,
        *,
        kind: str,
        error: type[PromptoptError],
        missing: type[PromptoptError] | None = None,
    ) -> None:
        self.group = group
        self.kind = kind
        self._error = error
        self._missing = missing or error

    def targets(self) -> dict[str, str]:
        """Every registered name and its ``module:attribute``."""
        return dict(_targets(self.group))

    def available(self, *, own: bool = False) -> list[str]:
        """Names of every registered plugin, sorted; ``own``: promptopt's own only."""
        return sorted(n for n, t in self.targets().items() if not own or t.startswith(_OWN))

    def get(self, name: str) -> Any:
        """The object registered as ``name``; raises this registry's error if unknown."""
        targets = self.targets()
        if name not in targets:
            listed = ", ".join(sorted(targets)) or f"none (no {self.group!r} entry points)"
            raise self._error(f"unknown {self.kind} {name!r}; registered: {listed}")
        module_name, _, attr = targets[name].partition(":")
        try:
            return getattr(import_module(module_name), attr)
        except ImportError as exc:
            if exc.name and not module_name.startswith(exc.name):  # a dependency of the plugin
                raise self._missing(
                    f"{self.kind} {name!r} needs the package {exc.name!r}, which is not "
                    f"installed; run: pip install {exc.name}"
                ) from exc
            raise self._error(
                f"{self.kind} {name!r} could not be loaded from {targets[name]!r}: {exc}"
            ) from exc
        except AttributeError as exc:
            raise self._error(
                f"{self.kind} {name!r} could not be loaded from {targets[name]!r}: {exc}"
            ) from exc


optimizers = Registry(OPTIMIZERS, kind="optimizer", error=OptimizerError)
providers = Registry(PROVIDERS, kind="provider", error=BackendUnavailableError)
