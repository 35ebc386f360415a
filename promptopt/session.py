"""Turn a validated task into the live parts of a run: models, budget, cache, program, data.

Everything a run needs is built here, once, from the :class:`TaskSpec`; the engine
receives finished objects. Models with the same configuration share one backend
(one loaded local model, one connection pool); every model call of a run goes
through one shared budget and is recorded in the run store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptopt.errors import OptimizerError, SandboxError, StoreError
from promptopt.graph import record_llm_call
from promptopt.llm.budget import Budget
from promptopt.llm.cache import ResponseCache
from promptopt.llm.client import LLM, CallEvent
from promptopt.llm.models import DEFAULT_MODEL, ModelConfig, make_backend, parse_model
from promptopt.llm.pricing import PriceTable
from promptopt.optimizers import registry
from promptopt.optimizers.base import OPTIMIZER_METHODS, PROMPT_SHAPE, Optimizer
from promptopt.racing import RaceRule
from promptopt.sandbox import Sandbox
from promptopt.task.data import Splits, load_splits
from promptopt.task.feedback import FeedbackRule, make_rules
from promptopt.task.metrics import Metric, make_metric
from promptopt.task.model_spec import ModelSpec
from promptopt.task.program import Program, PromptProgram, make_program

if TYPE_CHECKING:
    from promptopt.engine import Engine
    from promptopt.llm.base import Backend
    from promptopt.progress import Reporter
    from promptopt.store import RunStore
    from promptopt.task.spec import TaskSpec

__all__ = [
    "ROLES",
    "RunParts",
    "build_parts",
    "make_optimizers",
    "make_sandbox",
    "model_config",
    "race_rule",
    "role_configs",
]

ROLES = ("task", "optimizer", "judge")


@dataclass
class RunParts:
    program: Program
    metric: Metric | None
    splits: Splits
    task_llm: LLM
    optimizer_llm: LLM
    judge_llm: LLM
    test_llm: LLM
    optimizers: tuple[Any, ...]  # the stages, in the order they run
    budget: Budget
    concurrency: int
    seed: int
    description: str
    backends: list[Any] = field(default_factory=list)
    name: str = ""
    sandbox: Sandbox | None = None
    feedback_rules: tuple[FeedbackRule, ...] = ()
    racing: RaceRule | None = None
    shares: tuple[float | None, ...] = ()

    def optimization_usage(self) -> dict[str, Any]:
        """Calls, cache hits, tokens and dollars of the optimization phase (every role)."""
        total: dict[str, Any] = {}
        seen: set[int] = set()
        for llm in (self.task_llm, self.optimizer_llm, self.judge_llm):
            if id(llm) in seen:
                continue
            seen.add(id(llm))
            for key, value in llm.stats.snapshot().items():
                total[key] = total.get(key, 0) + value
        return total

    def engine(
        self, store: RunStore, *, reporter: Reporter | None = None, scoring_only: bool = False
    ) -> Engine:
        """The engine over these parts; ``scoring_only`` makes the budget-free test model its task model."""
        from promptopt.engine import Engine

        return Engine(program=self.program, metric=self.metric, splits=self.splits,
                      task_llm=self.test_llm if scoring_only else self.task_llm,
                      optimizer_llm=self.optimizer_llm, judge_llm=self.judge_llm, store=store,
                      concurrency=self.concurrency, seed=self.seed, reporter=reporter,
                      trace_name=self.name, sandbox=self.sandbox,
                      feedback_rules=self.feedback_rules, racing=self.racing,
                      shares=self.shares)  # fmt: skip

    async def aclose(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        for backend in self.backends:
            await backend.aclose()


def model_config(value: ModelConfig | str | Mapping[str, Any] | None) -> ModelConfig:
    """A ModelConfig from a task file's model entry: a string, a mapping, or a model object."""
    if value is None:
        return ModelConfig(model=DEFAULT_MODEL)
    if isinstance(value, ModelSpec):  # a task file's: a ModelConfig with its own checks
        return value.to_config()
    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        return ModelConfig(model=value)
    return ModelConfig(**value)  # a mapping


def role_configs(spec: TaskSpec) -> dict[str, ModelConfig]:
    """The model of each role; judge defaults to optimizer, optimizer to task."""
    task = model_config(spec.models.task)
    optimizer = model_config(spec.models.optimizer) if spec.models.optimizer else task
    judge = model_config(spec.models.judge) if spec.models.judge else optimizer
    return {"task": task, "optimizer": optimizer, "judge": judge}


def build_parts(
    spec: TaskSpec,
    *,
    store: RunStore,
    backends: Mapping[str, Backend] | None = None,
    sandbox: Sandbox | None = None,
) -> RunParts:
    """Build every live object of a run; ``backends`` replaces the backend of a role (tests, fakes).

    ``sandbox`` replaces the one the task's ``sandbox`` block describes. When the
    program has code parameters and that sandbox cannot run here, this raises
    :class:`SandboxError` before anything is spent.
    """
    base_dir = _base_dir(spec)
    program = make_program(spec.program, base_dir=base_dir)
    sandbox = sandbox or make_sandbox(spec, program)
    splits = load_splits(spec)
    choices = tuple(getattr(spec.program, "choices", None) or ())
    metric = (
        None
        if spec.metric is None
        else make_metric(spec.metric, choices=choices, base_dir=base_dir)
    )
    optimizers = make_optimizers(spec)
    budget = Budget(
        max_calls=spec.budget.max_calls,
        max_tokens=spec.budget.max_tokens,
        max_usd=spec.budget.max_usd,
    )
    cache = (
        None
        if spec.cache.policy == "off"
        else ResponseCache(spec.cache.dir, policy=spec.cache.policy)
    )
    prices = PriceTable(_prices(spec))
    configs = role_configs(spec)
    shared: dict[str, Any] = {}
    role_backend: dict[str, Any] = {}
    for role in ROLES:
        if backends and role in backends:
            role_backend[role] = backends[role]
            continue
        cfg = configs[role]
        key = cfg.model_dump_json()
        if key not in shared:
            shared[key] = make_backend(parse_model(cfg.model), cfg)
        role_backend[role] = shared[key]
    listener, replay = _store_hooks(store, budget)

    def llm_for(role: str, *, with_budget: bool) -> LLM:
        cfg = configs[role]
        ref = parse_model(cfg.model)
        return LLM(
            role_backend[role],
            provider=ref.provider,
            model=ref.name,
            cache=cache,
            budget=budget if with_budget else None,
            max_concurrency=cfg.concurrency(role_backend[role]),
            prices=prices,
            listeners=[listener, record_llm_call],
            replay=replay,
        )

    task_llm = llm_for("task", with_budget=True)
    optimizer_llm = llm_for("optimizer", with_budget=True)
    judge_llm = llm_for("judge", with_budget=True)
    test_llm = llm_for("task", with_budget=False)
    unique = list({id(b): b for b in role_backend.values()}.values())
    return RunParts(
        program=program,
        metric=metric,
        splits=splits,
        task_llm=task_llm,
        optimizer_llm=optimizer_llm,
        judge_llm=judge_llm,
        test_llm=test_llm,
        optimizers=optimizers,
        budget=budget,
        concurrency=spec.concurrency or configs["task"].concurrency(role_backend["task"]),
        seed=spec.seed,
        description=_describe(program, spec),
        backends=unique,
        name=spec.name,
        sandbox=sandbox,
        feedback_rules=make_rules(getattr(spec, "feedback", ())),
        racing=race_rule(spec),
        shares=tuple(stage.share for stage in spec.stages),
    )


def race_rule(spec: TaskSpec) -> RaceRule | None:
    """How the task's candidates are raced; None when racing is off or nothing is scored."""
    racing = spec.racing
    if not racing.enabled or spec.metric is None:
        return None
    return RaceRule(confidence=racing.confidence, min_rows=racing.min_rows)


def make_sandbox(spec: TaskSpec, program: Any = None) -> Sandbox | None:
    """The sandbox for the program's proposed code (None when it has no code parameter).

    Raises :class:`SandboxError` when that sandbox cannot run here; nothing is
    started either way (the worker starts on the first call).
    """
    if program is None:
        program = make_program(spec.program, base_dir=_base_dir(spec))
    if "code" not in getattr(program, "kinds", {}).values():
        return None
    block = getattr(spec, "sandbox", None)
    sandbox = (
        Sandbox()
        if block is None
        else Sandbox(
            isolation=block.isolation, timeout_s=block.timeout_s, memory_mb=block.memory_mb
        )
    )
    problem = sandbox.problem()
    if problem is not None:
        raise SandboxError(problem)
    return sandbox


def _base_dir(spec: TaskSpec) -> Path:
    return Path(getattr(spec, "base_dir", None) or ".")


def make_optimizers(spec: TaskSpec) -> tuple[Any, ...]:
    """The task's optimizers, one per stage, each found in the registry and configured."""
    made = []
    for stage in spec.stages:
        optimizer_cls = registry.get(stage.name)
        optimizer = optimizer_cls(optimizer_cls.Config.model_validate(dict(stage.config or {})))
        if not isinstance(optimizer, Optimizer):  # a plugin's gap, found before anything is spent
            lacking = [m for m in OPTIMIZER_METHODS if not callable(getattr(optimizer, m, None))]
            raise OptimizerError(
                f"optimizer {stage.name!r} does not keep the optimizer contract: it lacks "
                f"{', '.join(lacking) or 'name or Config'} (promptopt.testing.check_optimizer "
                "says what else)"
            )
        made.append(optimizer)
    return tuple(made)


def _prices(spec: TaskSpec) -> dict[str, Any]:
    prices = getattr(spec, "prices", None) or {}
    return {
        name: (p.model_dump() if hasattr(p, "model_dump") else dict(p))
        for name, p in prices.items()
    }


def _store_hooks(store: RunStore, budget: Budget):
    """The listener that records every call, and the replay lookup that answers from the store.

    The keys with a recorded answer are kept in memory, so a request the store
    cannot answer (nearly all of them in a fresh run) costs no database query.
    What the store holds as paid against the budget (a resumed run's earlier
    processes) is carried into ``budget``; each of those calls, when replayed,
    is counted once as replayed (see :attr:`Budget.replay_remaining_calls`).
    """
    answered = store.answered_keys()
    carried = store.answered_keys(budgeted=True)
    budget.carry(**store.budget_spent())

    def record(event: CallEvent) -> None:
        if event.cached and event.key in answered:
            return  # a replay: the original answer is already in the store
        try:
            store.record_llm_call(event)
        except StoreError:
            if store.write_error is None:
                raise  # not a write failure: the client logs it, as any listener's
            return  # kept in store.write_error: the engine stops the run when it sees it
        if event.response is not None and not event.cached:
            answered.add(event.key)

    def replay(key: str):
        if key not in answered:
            return None
        if key in carried:
            carried.discard(key)
            budget.replayed()
        return store.recorded_response(key)

    return record, replay


def _describe(program: Program, spec: TaskSpec) -> str:
    """What the program does, for optimizers' prompts: the task's description first."""
    if isinstance(program, PromptProgram):
        shape = PROMPT_SHAPE
    else:
        shape = f"the Python workflow {getattr(program, 'entry', '?')!r}"
    told = " ".join(str(getattr(spec, "description", "") or "").split())
    return f"{told} ({shape})" if told else shape
