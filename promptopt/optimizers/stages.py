"""The stages of a composed search (``optimizer: [opro, exemplars]``): which optimizers run, in
order, and what they counted.

The engine runs the stages one after another in one run and one budget; each starts
from the previous stage's best candidate (see :meth:`promptopt.engine.Engine.search`).
Stages must select the same way: a pairwise optimizer's vote shares and a metric's
scores do not compare, so one stage's winner could not seed the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from promptopt.errors import ConfigError
from promptopt.optimizers.base import Optimizer, PairwiseOptimizer

__all__ = ["merged_stats", "stages_of"]


def stages_of(optimizer: Optimizer | Sequence[Optimizer]) -> tuple[Optimizer, ...]:
    """The stages of a search: one optimizer, or several that select the same way."""
    stages = tuple(optimizer) if isinstance(optimizer, Sequence) else (optimizer,)
    if not stages:
        raise ConfigError("a search needs at least one optimizer")
    kinds = {isinstance(stage, PairwiseOptimizer) for stage in stages}
    if len(kinds) > 1:
        raise ConfigError(
            "a pairwise optimizer (such as 'spo') selects by its judge and the others by the "
            f"metric, so they cannot be stages of one search: {[s.name for s in stages]!r}"
        )
    return stages


def merged_stats(stages: Sequence[Optimizer]) -> dict[str, Any]:
    """What the optimizers counted of their models' replies; a stage's keys are prefixed with
    its name (and its index, for an optimizer that runs twice) when there are several."""
    names = [stage.name for stage in stages]
    merged: dict[str, Any] = {}
    for index, stage in enumerate(stages):
        stats = getattr(stage, "stats", None)  # counted by optimizers that count
        if not isinstance(stats, Mapping):
            continue
        prefix = "" if len(stages) == 1 else (
            f"{stage.name} " if names.count(stage.name) == 1 else f"{stage.name}#{index} "
        )  # fmt: skip
        merged.update({f"{prefix}{key}": value for key, value in stats.items()})
    return merged
