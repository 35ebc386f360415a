"""What a run would spend, worked out without calling any model: ``promptopt optimize --dry-run``.

:func:`estimate_plan` builds the program and the data as the run would, counts
the calls each example makes (a workflow runs once against a fake model), and
gives each stage of ``optimizer: [a, b]`` its share of the budget with the steps
that share pays for (:func:`stage_plans`). A share that cannot pay for one
useful step is a :class:`~promptopt.errors.ConfigError` here, before any run
starts; the run itself checks the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt import aio
from promptopt.errors import ConfigError
from promptopt.llm.client import LLM
from promptopt.llm.models import parse_model
from promptopt.llm.pricing import PriceTable
from promptopt.optimizers.stages import (
    cumulative_allotment,
    planned_steps,
    share_weights,
    smallest_step,
)
from promptopt.session import _base_dir, _prices, make_optimizers, race_rule, role_configs
from promptopt.task.data import Splits, load_splits
from promptopt.task.program import Program, PromptProgram, make_program

if TYPE_CHECKING:
    from promptopt.task.spec import TaskSpec

__all__ = ["Plan", "StagePlan", "check_shares", "estimate_plan", "stage_plans"]


@dataclass(frozen=True)
class Plan:
    """What a run would spend, computed without calling any model."""

    optimization_calls: int
    test_calls: int
    budget_calls: int | None
    est_tokens_per_call: int
    est_cost_usd: float
    rows: tuple[tuple[str, str], ...]


def estimate_plan(spec: TaskSpec) -> Plan:
    """Project calls and cost of a run without calling any model."""
    program = make_program(spec.program, base_dir=_base_dir(spec))
    splits = load_splits(spec)
    optimizers = make_optimizers(spec)
    n_val, n_train, n_test = len(splits.val), len(splits.train), len(splits.test)
    per_example, tokens = _per_example(program, splits)
    stages = stage_plans(spec, optimizers, n_train=n_train, n_val=n_val, per_example=per_example)
    searched = 0  # every stage's own estimate; a stage's seed is the previous stage's best
    for optimizer in optimizers:
        searched += optimizer.estimate_calls(n_train=n_train, n_val=n_val)
    opt_calls = per_example * (n_val + searched)
    if spec.budget.max_calls is not None:
        opt_calls = min(opt_calls, spec.budget.max_calls)
    test_calls = 2 * n_test * per_example if spec.metric is not None else 0  # nothing to score
    cfg = role_configs(spec)["task"]
    ref = parse_model(cfg.model)
    from promptopt.llm.types import Usage

    prices = PriceTable(_prices(spec))
    per_call = prices.cost(
        ref.provider, ref.name, Usage(tokens, getattr(program, "max_tokens", 64) or 64)
    )
    cost = per_call * (opt_calls + test_calls)
    rows = (
        ("task model", cfg.model),
        ("optimizer", " -> ".join(stage.name for stage in spec.stages)),
        *((plan.label, plan.text) for plan in stages),
        ("racing", _racing_text(spec)),
        ("train / val / test", f"{n_train} / {n_val} / {n_test}"),
        ("model calls per example", str(per_example)),
        ("optimization calls (at most)", str(opt_calls)),
        ("test calls (seed and best)", str(test_calls)),
        ("budget max_calls", str(spec.budget.max_calls)),
        ("tokens per call (est.)", str(tokens)),
        (
            "cost (est.)",
            f"${cost:.4f}"
            + (
                ""
                if prices.known(ref.provider, ref.name) or ref.provider in ("local", "fake", "vllm")
                else " (no price known for this model)"
            ),
        ),
    )
    return Plan(
        optimization_calls=opt_calls,
        test_calls=test_calls,
        budget_calls=spec.budget.max_calls,
        est_tokens_per_call=tokens,
        est_cost_usd=cost,
        rows=rows,
    )


@dataclass(frozen=True)
class StagePlan:
    """One stage's share of the budget (None: no limit on calls) and its planned steps."""

    index: int
    name: str
    share: int | None
    steps: tuple[int, ...]  # the calls of each step

    @property
    def label(self) -> str:
        return f"stage {self.index + 1}: {self.name}"

    @property
    def text(self) -> str:
        share = "no limit on calls" if self.share is None else f"share {self.share} calls"
        if not self.steps:
            return f"{share}; no step"
        if len(set(self.steps)) == 1:
            each = f"{len(self.steps)} step{'s' if len(self.steps) > 1 else ''} of {self.steps[0]}"
        else:
            each = f"{len(self.steps)} steps: {' + '.join(map(str, self.steps))}"
        return f"{share}; {each} calls (planned, before racing)"


def stage_plans(
    spec: TaskSpec, optimizers: Sequence[Any], *, n_train: int, n_val: int, per_example: int
) -> list[StagePlan]:
    """Each stage's share of ``budget.max_calls`` and the steps it pays for, as the run will
    size them (a later stage gets more when an earlier one leaves calls unspent).

    Raises :class:`ConfigError` before anything is spent when a share cannot pay
    for one useful step of its optimizer, naming the stage and the calls it needs.
    """
    max_calls = spec.budget.max_calls
    total = None if max_calls is None else max_calls - n_val * per_example  # after the seed
    weights = (
        share_weights(optimizers, [stage.share for stage in spec.stages], n_train=n_train,
                      n_val=n_val)
        if total is not None and len(optimizers) > 1 else []
    )  # fmt: skip
    plans, before = [], 0
    for index, optimizer in enumerate(optimizers):
        share = None
        if total is not None:
            upto = cumulative_allotment(weights, index, total) if weights else total
            share, before = max(upto - before, 0), upto
        rows = None if share is None else share // max(per_example, 1)
        steps = planned_steps(optimizer, calls=rows, n_train=n_train, n_val=n_val)
        if share is not None and not steps:
            need = smallest_step(optimizer, n_train=n_train, n_val=n_val) * per_example
            which = f"stage {index + 1} ({optimizer.name})" if len(optimizers) > 1 else (
                f"optimizer {optimizer.name!r}")  # fmt: skip
            raise ConfigError(
                f"{which} gets {share} of budget.max_calls={max_calls} (after the seed's "
                f"{n_val * per_example} calls on {n_val} validation rows); one useful step of "
                f"it needs {need} calls: raise budget.max_calls, give it a larger share:, or "
                "shrink data.split.val"
            )
        plans.append(StagePlan(index, optimizer.name, share, tuple(c * per_example for c in steps)))
    return plans


def _racing_text(spec: TaskSpec) -> str:
    rule = race_rule(spec)
    if rule is None:
        return "off"
    return (f"on: candidates dropped once worse than the best at {rule.confidence:g} "
            f"confidence, tested every {rule.min_rows} validation rows")  # fmt: skip


def _per_example(program: Program, splits: Splits) -> tuple[int, int]:
    """Model calls per example, and prompt tokens per call, both estimated without a model.

    A prompt program makes one request, built here. A workflow is run once on one
    example against a fake model that answers every request with its first choice
    (or "ok") and counts them; a workflow that fails on such answers counts as one.
    """
    sample = list(splits.val[:5]) or list(splits.train[:5])
    if not sample:
        return 1, 0
    if isinstance(program, PromptProgram):
        requests = [program.request(program.seed_params(), e.inputs) for e in sample]
    else:
        requests = _requests_of_one_run(program, sample[0])
    if not requests:
        return 1, 0
    chars = [sum(len(m.content) for m in r.messages) for r in requests]
    calls = 1 if isinstance(program, PromptProgram) else len(requests)
    return calls, math.ceil(sum(chars) / len(chars) / 4) + 16


def _requests_of_one_run(program: Program, example: Any) -> list[Any]:
    from promptopt.llm.fakes import FakeBackend

    backend = FakeBackend(lambda r: r.choices[0] if r.choices else "ok")
    llm = LLM(backend, provider="fake", model="dry-run")

    async def once() -> None:
        try:
            await program.run(program.seed_params(), example, llm=llm)
        except Exception:  # the workflow may not cope with fake answers: count what it sent
            pass
        finally:
            await llm.aclose()

    aio.run(once())  # the caller may already be inside an event loop
    return list(backend.requests)


def check_shares(spec: TaskSpec) -> None:
    """Raise :class:`ConfigError` when a stage's share of ``budget.max_calls`` cannot pay for
    one useful step (nothing to check without a limit on calls)."""
    if spec.budget.max_calls is None:
        return
    program = make_program(spec.program, base_dir=_base_dir(spec))
    splits = load_splits(spec)
    per_example, _ = _per_example(program, splits)
    stage_plans(spec, make_optimizers(spec), n_train=len(splits.train), n_val=len(splits.val),
                per_example=per_example)  # fmt: skip
