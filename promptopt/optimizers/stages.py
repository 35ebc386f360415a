"""The stages of a composed search (``optimizer: [opro, exemplars]``): which optimizers run, in
order, and what they counted.

The engine runs the stages one after another in one run and one budget; each starts
from the previous stage's best candidate (see :meth:`promptopt.engine.Engine.search`).
Stages must select the same way: a pairwise optimizer's vote shares and a metric's
scores do not compare, so one stage's winner could not seed the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from promptopt.errors import ConfigError
from promptopt.optimizers.base import Optimizer, PairwiseOptimizer

__all__ = [
    "cumulative_allotment",
    "merged_stats",
    "planned_steps",
    "share_weights",
    "smallest_step",
    "stages_of",
]


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


def planned_steps(
    optimizer: Optimizer, *, calls: int | None, n_train: int, n_val: int
) -> list[int]:
    """The calls of each step ``optimizer`` would take within ``calls`` (None: no limit).

    An optimizer that plans (``plan_steps``, optional in the contract) says so
    itself; for one that does not, its :meth:`estimate_calls` is one step, cut to
    ``calls``, and a share below one candidate's validation rows pays for nothing.
    """
    plan = getattr(optimizer, "plan_steps", None)
    if callable(plan):
        return [int(c) for c in plan(calls=calls, n_train=n_train, n_val=n_val)]
    estimate = optimizer.estimate_calls(n_train=n_train, n_val=n_val)
    if calls is None:
        return [estimate] if estimate else []
    return [min(estimate, calls)] if calls >= max(n_val, 1) and estimate else []


def smallest_step(optimizer: Optimizer, *, n_train: int, n_val: int) -> int:
    """The fewest calls that pay for one useful step of ``optimizer`` (its plan's first step
    at the least share that plans one), found by bisection over shares."""
    high = sum(planned_steps(optimizer, calls=None, n_train=n_train, n_val=n_val))
    if not planned_steps(optimizer, calls=high, n_train=n_train, n_val=n_val):
        return high
    low = 0  # planning nothing at low, something at high
    while high - low > 1:
        middle = (low + high) // 2
        if planned_steps(optimizer, calls=middle, n_train=n_train, n_val=n_val):
            high = middle
        else:
            low = middle
    return high


def share_weights(
    stages: Sequence[Optimizer], shares: Sequence[float | None], *, n_train: int, n_val: int
) -> list[float]:
    """Each stage's fraction of the budget left after the seed: its own ``share``, or for
    stages without one, the rest in proportion to what their optimizers plan at their
    configuration (:func:`planned_steps` with no limit: their own models' calls too)."""
    given = sum(share for share in shares if share)
    open_ = [i for i, share in enumerate(shares) if not share]
    estimates = {
        i: sum(planned_steps(stages[i], calls=None, n_train=n_train, n_val=n_val)) for i in open_
    }
    total = sum(estimates.values())
    rest = max(1.0 - given, 0.0)
    weights = []
    for i, share in enumerate(shares):
        if share:
            weights.append(float(share))
        else:
            weights.append(rest * (estimates[i] / total if total else 1 / len(open_)))
    return weights


def cumulative_allotment(weights: Sequence[float], index: int, total: int) -> int:
    """Calls stages ``0..index`` may have spent in all (what one leaves passes to the next);
    the last stage's is ``total``."""
    if index >= len(weights) - 1:
        return total
    return math.floor(total * sum(weights[: index + 1]) + 1e-9)
