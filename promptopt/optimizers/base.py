"""What an optimizer sees and returns: the search state, proposals and evaluated candidates.

Optimizers only propose. The engine evaluates every proposal, enforces the budget,
records everything in the run store and checkpoints; an optimizer reads the
:class:`SearchState` the engine keeps and returns :class:`Proposal` objects.

A :class:`PairwiseOptimizer` (SPO) selects without the metric: the engine runs each
proposal on the validation examples, then asks the optimizer's ``judge`` for a
:class:`Verdict` between it and the incumbent, records every :class:`Vote`, and
makes the challenger the incumbent on a strict majority of the votes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from promptopt.task.results import ExampleResult  # re-exported: its home is the task layer

_Config = TypeVar("_Config", bound=BaseModel)

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = [
    "Candidate",
    "Evaluated",
    "ExampleResult",
    "OPTIMIZER_METHODS",
    "PROMPT_SHAPE",
    "Optimizer",
    "PairwiseOptimizer",
    "Proposal",
    "SearchState",
    "Verdict",
    "Vote",
    "candidate_id",
    "config_of",
    "gather_all",
]

_T = TypeVar("_T")

# How SearchState.program_description names a prompt program's shape (after the task's
# description); rewriters reject a new prompt that copies it.
PROMPT_SHAPE = "a chat prompt: system message, exemplars as chat turns, then the user template"


def candidate_id(params: Mapping[str, Any]) -> str:
    """A short, stable id for a set of parameter values (equal values, equal id)."""
    blob = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


async def gather_all(*aws: Awaitable[_T]) -> list[_T]:
    """Await ``aws`` together, in order; once every one is done, raise the first failure.

    Unlike a plain :func:`asyncio.gather`, nothing is left running after a failure
    (a budget stop in one branch), so no call lands after the caller moved on.
    """
    outcomes = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)  # type: ignore[arg-type]


def config_of(model: type[_Config], config: _Config | Mapping[str, Any] | None) -> _Config:
    """An optimizer's config: ``config`` itself if it is a ``model``, else validated into one."""
    return config if isinstance(config, model) else model.model_validate(dict(config or {}))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One assignment of every trainable parameter: ``{name: text or list}``."""

    params: Mapping[str, Any]
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", candidate_id(self.params))


@dataclass(frozen=True, slots=True)
class Proposal:
    """A candidate an optimizer wants evaluated, with where it came from and why.

    ``request_key`` is the key (``LLM.key``) of the optimizer-model request whose reply
    this candidate was read from, if any; the engine records the link in the run store.
    ``free``: every answer it needs is in the run already (the exemplar optimizer's
    calibrations re-read scored answers), so racing it would save nothing: it is
    scored on every row.
    """

    params: Mapping[str, Any]
    parent_id: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    request_key: str | None = None
    free: bool = False


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A candidate scored on one split: the mean score and every example's result."""

    candidate: Candidate
    split: str
    results: tuple[ExampleResult, ...]
    parent_id: str | None = None
    origin: str = ""
    step: int = 0

    @property
    def score(self) -> float:
        return sum(r.score.value for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def invalid(self) -> int:
        return sum(1 for r in self.results if not r.score.valid)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None)

    def rescored(self, value: float, feedback: str) -> Evaluated:
        """A copy with every example's score set to ``value`` (a judged candidate's vote share)."""
        results = tuple(
            dataclasses.replace(
                r, score=dataclasses.replace(r.score, value=value, feedback=feedback)
            )
            for r in self.results
        )
        return dataclasses.replace(self, results=results)


class EvaluateFn(Protocol):
    """``SearchState.evaluate``: score ``params`` on ``examples`` through the engine.

    A candidate is recorded when first seen; ``parent_id``, ``origin`` and ``meta``
    name it there (a child an optimizer tries on a minibatch before proposing it,
    say). An already recorded candidate keeps what it was recorded with.
    """

    def __call__(
        self,
        params: Mapping[str, Any],
        examples: Sequence[Example],
        /,
        *,
        parent_id: str | None = None,
        origin: str = "probe",
        meta: Mapping[str, Any] | None = None,
    ) -> Awaitable[Evaluated]: ...


RecordFn = Callable[[str, Mapping[str, Any]], None]


def _no_record(kind: str, payload: Mapping[str, Any]) -> None:
    """What ``SearchState.record`` does outside the engine: nothing."""


@dataclass(frozen=True, slots=True)
class Vote:
    """One pairwise judge call: which side the challenger was shown on and who won.

    ``swapped`` is True when the challenger's answers were shown as A (the
    incumbent's as B); ``choice`` is what the judge picked (``A``, ``B``, or ``""``
    when its reply was unreadable, which counts as a vote for the incumbent).
    """

    index: int
    swapped: bool
    choice: str
    reply: str = ""
    request_key: str = ""

    @property
    def challenger_won(self) -> bool:
        return self.choice == ("A" if self.swapped else "B")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The votes of one comparison; the challenger wins on a strict majority (2-2 loses)."""

    incumbent_id: str
    challenger_id: str
    votes: tuple[Vote, ...]

    @property
    def wins(self) -> int:
        return sum(1 for v in self.votes if v.challenger_won)

    @property
    def accepted(self) -> bool:
        return 2 * self.wins > len(self.votes)

    @property
    def share(self) -> float:
        """The share of votes the challenger won (0.0 when there were none)."""
        return self.wins / len(self.votes) if self.votes else 0.0


@dataclass
class SearchState:
    """The engine's view of the search, read by optimizers.

    ``history`` holds every candidate evaluated on the validation split, in order;
    ``pool`` holds the model's own correct validation answers as
    ``(example, output)`` pairs, gathered at no extra cost whenever a candidate is
    scored. ``evaluate`` lets an optimizer score a candidate on examples of its
    choosing (a training batch, say) through the engine, which budgets and
    records the calls. ``choices`` are the program's allowed answers, if any.
    ``kinds`` gives each trainable parameter's kind: ``text``, ``exemplars`` or
    ``code`` (Python source of one function). ``features`` are what the program
    accepts beyond plain values (``nearest_exemplars``: an exemplars value that
    picks the nearest pool items per input). ``remaining_calls`` is 0 once the
    budget has stopped the search: a proposal then must cost no model call
    (its answers already in the run), or it is not evaluated.

    ``record(kind, payload)`` keeps an optimizer's own records (MCTS's tree) in
    the run store, in order, once: a resumed run that replays the same records
    does not write them again. An optimizer with its own final rule sets
    ``chosen`` to the id of a candidate in ``history``; ``best`` is then that
    candidate instead of the highest validation score.
    ``rules`` names the task's feedback
    rules in their order, with the message each gives the optimizer.
    ``incumbent``, set by the engine under pairwise selection, is the latest
    winner of the judge; it is then the best, whatever the scores say.
    ``dropped`` maps the candidates that racing dropped partway through the
    validation rows (never in ``history``, never chosen) to their mean score on
    the rows they were scored on; :meth:`evaluated_ids` counts them as seen.
    """

    seed: Candidate
    trainable: tuple[str, ...]
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    program_description: str
    evaluate: EvaluateFn
    history: list[Evaluated] = field(default_factory=list)
    pool: list[tuple[Example, str]] = field(default_factory=list)
    step: int = 0
    remaining_calls: int | None = None
    choices: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    record: RecordFn = _no_record
    chosen: str | None = None
    rules: dict[str, str] = field(default_factory=dict)
    incumbent: Evaluated | None = None
    dropped: dict[str, float] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[str]:
        """The trainable parameters of one kind, in order."""
        return [name for name in self.trainable if self.kinds.get(name, "text") == kind]

    @property
    def best(self) -> Evaluated | None:
        if self.incumbent is not None:
            return self.incumbent
        if not self.history:
            return None
        if self.chosen is not None:
            for evaluated in self.history:
                if evaluated.candidate.id == self.chosen:
                    return evaluated
        # first-seen wins ties, so the seed stays best unless something beats it
        return max(self.history, key=lambda e: e.score)

    def evaluated_ids(self) -> set[str]:
        return {e.candidate.id for e in self.history} | set(self.dropped)


OPTIMIZER_METHODS = ("propose", "observe", "estimate_calls")  # what a plugin lacking one is told


@runtime_checkable
class Optimizer(Protocol):
    """A pure proposer. Registered through the ``promptopt.optimizers`` entry-point group.

    Constructed as ``cls(config)`` with a validated ``Config`` (every field with a
    default, so ``cls()`` works too). ``stats``, a mapping of counters, is optional:
    a composed run's summary shows it when present. Two more members are optional:
    ``plan_steps(*, calls, n_train, n_val) -> list[int]``, the calls of each step
    it would take within ``calls`` (None: its defaults; every call counted, its
    own model's too; [] when ``calls`` cannot pay for one useful step), which
    sizes stage shares and ``--dry-run``; and ``racing: ClassVar[bool]``, True
    when its candidates may be raced (dropped partway through validation: it
    must cope with ``observe`` getting fewer results than it proposed).
    :func:`promptopt.testing.check_optimizer` holds a class to this contract.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        """Return candidates to evaluate next; an empty list ends the search."""
        ...

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Bookkeeping after the engine scored this step's proposals."""
        ...

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls this optimizer expects to spend at its config (``--dry-run``)."""
        ...


@runtime_checkable
class PairwiseOptimizer(Optimizer, Protocol):
    """An optimizer whose candidates are selected by a pairwise judge, not by the metric.

    The engine never applies the metric on validation for it (labels, if any,
    serve only the final test score). It runs each proposal on the validation
    examples and calls :meth:`judge` with the incumbent and the challenger
    (their outputs in ``results``); the verdict's votes are stored, the
    challenger's validation score is its vote share, and it becomes the
    incumbent when :attr:`Verdict.accepted`. The seed scores 0.5.
    """

    async def judge(
        self,
        state: SearchState,
        *,
        incumbent: Evaluated,
        challenger: Evaluated,
        llm: LLM,
        rng: random.Random,
    ) -> Verdict:
        """Compare the two candidates' answers with the judge model (``llm``)."""
        ...
