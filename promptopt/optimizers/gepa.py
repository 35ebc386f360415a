"""GEPA (Agrawal et al., "GEPA: Reflective Prompt Evolution Can Outperform Reinforcement
Learning", arXiv 2507.19457, ICLR 2026): reflective rewrites of one parameter at a time (a
text, or a code parameter's function), parents drawn from the per-example Pareto frontier,
children accepted on a minibatch first.

The search keeps every candidate scored on the whole validation split (the
engine's ``history``). One iteration:

1. **Frontier.** For each validation example, the candidates with its highest
   score lead it (examples no candidate gets any credit on lead nowhere). A
   candidate that leads no example, or whose examples are all led by others
   still in, is dropped, lowest mean score first; the rest are the frontier.
2. **Parent.** One frontier candidate, drawn with weight = the examples it leads.
3. **Minibatch.** The next ``minibatch`` training examples of a shuffled pass
   over the training split (reshuffled each pass); the parent runs on them
   (``state.evaluate``: budgeted and recorded by the engine). A parent with full
   marks on all of them is skipped (nothing to learn from): that costs the
   minibatch but is not an iteration, as in the library; a whole pass over the
   training split of such skips in a row ends the search.
4. **Reflection.** The optimizer model sees the value of one parameter (the
   trainable text and code parameters in turn, in the program's order), the
   minibatch's inputs, outputs, expected outputs and the metric's feedback, and
   writes one new version of it. A text must keep its ``{placeholders}``; a code
   parameter is the source of one Python function, and the request asks for the
   whole new function with the same name and arguments (standard library only,
   imports inside it), which :func:`~promptopt.optimizers.replies.check_value`
   checks; the engine runs it in the sandbox. For a workflow program, each
   example also shows its run's traced steps from the parameters to the output
   (:func:`traced_view`: the joint subgraph OptoPrime shows) and the values
   between them; a prompt program's run has no trace, and its examples show none.
5. **Acceptance.** The child runs on the same minibatch; only a child with a
   higher minibatch total than its parent's is proposed, and the engine then
   scores it on the whole validation split. A rejected child costs the
   minibatch calls and the reflection, and the iteration ends.

**Merge.** After each accepted child (up to ``max_merges`` times), the next
iteration first looks for two frontier candidates, neither descended from the
other, whose lineages (``parent_id`` links) meet in a common ancestor and that
changed different parameters from it (texts and functions alike). The merged
candidate takes each parameter from the side that changed it (from the one with
the higher validation score where both did); it is proposed when its score on a
training minibatch is at least the better parent's there. Each pair is tried once.

The paper's defaults: minibatch 3, merge on with 5 merges at most. The budget
(``budget.max_calls``) usually ends the search before ``iterations``; it ends
when the calls left cannot pay for one more iteration (two minibatches, the
reflection and the validation rows). The best is the candidate with the highest
validation mean, as in the library.
The meta-prompt is ``templates/gepa.txt``: parts ``system``, ``reflect`` and ``retry``
for a text, ``code_system``, ``code_reflect`` and ``code_retry`` for a function, and
``example`` and ``trace`` (a workflow's traced steps) for each minibatch example.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from promptopt.errors import OptimizerError
from promptopt.optimizers.answers import answers_rule, confusions, rules
from promptopt.optimizers.base import (
    Evaluated,
    ExampleResult,
    Proposal,
    SearchState,
    candidate_id,
    config_of,
)
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.optimizers.optoprime_views import View, value_lines, view_of
from promptopt.optimizers.rewriters import (
    SEED_RANGE,
    MarkedRewriter,
    RewriteConfig,
    quoted_lines,
    show_example,
    text_targets,
)
from promptopt.optimizers.shown import input_fields, role_of

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.llm.types import LLMRequest
    from promptopt.task.data import Example

__all__ = ["GEPA", "GEPAConfig", "frontier", "merge_params", "traced_view"]

_KINDS = ("text", "code")  # the kinds of parameter GEPA rewrites


class GEPAConfig(RewriteConfig):
    params: list[str] | None = Field(
        None,
        description="Text or code parameters to rewrite, in turn (default: every trainable one).",
    )
    iterations: int = Field(
        30, ge=1, description="Iterations at most (each: a minibatch, a reflection, a child)."
    )
    minibatch: int = Field(
        3, ge=1, description="Training examples a child is judged on before validation (paper: 3)."
    )
    merge: bool = Field(
        True, description="Merge frontier candidates that changed different parameters."
    )
    max_merges: int = Field(5, ge=0, description="Merges at most (paper: 5).")
    skip_perfect: bool = Field(
        True, description="Skip a parent with full marks on its minibatch (nothing to reflect on)."
    )


def _complete(state: SearchState) -> list[Evaluated]:
    """The candidates scored on every validation example, in the order they were scored."""
    n = len(state.val)
    return [e for e in state.history if len(e.results) == n]


def frontier(candidates: Sequence[Evaluated]) -> dict[str, int]:
    """The per-example Pareto frontier: each kept candidate's id -> the examples it leads.

    An example is led by every candidate with its highest score (none when that is 0).
    Candidates are then dropped, lowest mean first, while every example they lead is
    led by another candidate still in; what is left leads at least one example.
    """
    leads: dict[str, set[str]] = {}
    by_example: dict[str, dict[str, float]] = {}
    for evaluated in candidates:
        leads.setdefault(evaluated.candidate.id, set())
        for r in evaluated.results:
            by_example.setdefault(str(r.example.id), {})[evaluated.candidate.id] = r.score.value
    for example, scores in by_example.items():
        top = max(scores.values())
        if top > 0:
            for cid, value in scores.items():
                if value == top:
                    leads[cid].add(example)
    mean = {e.candidate.id: e.score for e in candidates}
    kept = {cid for cid, led in leads.items() if led}
    for cid in sorted(kept, key=lambda c: (mean[c], c)):
        others = kept - {cid}
        if all(any(example in leads[o] for o in others) for example in leads[cid]):
            kept.discard(cid)
    return {cid: len(leads[cid]) for cid in sorted(kept)}


def _lineage(cid: str, parents: Mapping[str, str | None]) -> list[str]:
    """``cid`` and its ancestors, nearest first."""
    chain = [cid]
    while (parent := parents.get(chain[-1])) is not None and parent not in chain:
        chain.append(parent)
    return chain


def merge_params(
    a: Evaluated, b: Evaluated, ancestor: Mapping[str, Any], names: Sequence[str]
) -> dict[str, Any] | None:
    """``a`` and ``b`` merged over their common ``ancestor``'s params: each of ``names`` from
    the side that changed it (the higher-scoring side where both did); None unless each
    side changed a parameter the other did not."""
    merged = dict(ancestor)
    only_a = only_b = False
    for name in names:
        va, vb, v0 = a.candidate.params.get(name), b.candidate.params.get(name), ancestor.get(name)
        if va != v0 and vb == v0:
            merged[name], only_a = va, True
        elif vb != v0 and va == v0:
            merged[name], only_b = vb, True
        elif va != v0:
            merged[name] = va if a.score >= b.score else vb
    return merged if only_a and only_b else None


def traced_view(
    result: ExampleResult, params: Mapping[str, Any], trainable: Sequence[str]
) -> View | None:
    """The joint subgraph of ``result``'s trace (:func:`view_of`), or None when it has no
    traced step to show: no trace (a prompt program's run), or none linking a trainable
    parameter to the output (the view is then the synthetic one-line program)."""
    if result.trace is None:
        return None
    view = view_of(result, params, trainable)
    return view if view.traced else None


class GEPA:
    """Reflective rewrites from a Pareto frontier of parents, accepted on a minibatch first."""

    name: ClassVar[str] = "gepa"
    racing: ClassVar[bool] = True  # a dropped child never joins the frontier
    Config: ClassVar[type[BaseModel]] = GEPAConfig

    def __init__(self, config: GEPAConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(GEPAConfig, config)
        self.stats: dict[str, int] = {
            "iterations": 0, "proposals": 0, "accepted": 0, "rejected": 0, "perfect_skips": 0,
            "merges": 0, "merges_rejected": 0, "budget_stop": 0, "perfect_stop": 0,
        }  # fmt: skip
        self._parts = template_parts("gepa")
        self._rewriters = {  # by the kind of parameter rewritten; they share the stats
            kind: MarkedRewriter(stats=self.stats, retries=self.config.retries,
                                 retry=self._parts[retry])
            for kind, retry in (("text", "retry"), ("code", "code_retry"))
        }  # fmt: skip
        self._order: list[Example] = []  # the rest of this pass over the training split
        self._merges_due = 0
        self._tried: set[tuple[str, str]] = set()
        self._mutated = False  # the last proposal was a reflective child
        self._left: int | None = None  # calls left in this step, as this optimizer counts them
        self._perfect_in_row = 0  # parents with full marks on their minibatch, in a row

    # -- the contract ---------------------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        c = self.config
        targets = text_targets(state, c.params, optimizer=self.name, kinds=_KINDS)
        if not state.train:
            raise OptimizerError("the gepa optimizer reflects on training examples, and the "
                                 "task has none: give data a train split")  # fmt: skip
        self._mutated = False
        # the engine sets remaining_calls once per step; the iterations of this call that
        # propose nothing spend from it, so count what they spend here
        self._left = state.remaining_calls
        while self.stats["iterations"] < c.iterations and state.history:
            if self._left is not None and self._left < self._step_calls(
                len(state.train), len(state.val)
            ):
                self.stats["budget_stop"] += 1
                return []
            if self._merges_due and c.merge and self.stats["merges"] < c.max_merges:
                tried, merged = await self._merge(state, rng)
                if tried:  # a merge tried, accepted or not, is this iteration
                    self.stats["iterations"] += 1
                if merged is not None:
                    return [merged]
                if tried:
                    continue
            child = await self._mutate(state, llm, rng, targets)
            if child is not None:
                self._mutated = True
                return [child]
            if self._perfect_in_row > len(state.train) // max(c.minibatch, 1):
                # a whole pass over the training split found nothing to reflect on
                self.stats["perfect_stop"] += 1
                return []
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """A reflective child scored on the whole validation split makes a merge due."""
        if self._mutated and results:
            self._merges_due += 1

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls at most: per iteration, two minibatches and the validation rows."""
        return self.config.iterations * (2 * min(self.config.minibatch, n_train) + n_val)

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """An iteration whose child is accepted: two minibatches, the reflection and the
        validation rows (a rejected one costs less and proposes nothing)."""
        step = self._step_calls(n_train, n_val)
        count = self.config.iterations if calls is None else min(self.config.iterations,
                                                                 calls // step)  # fmt: skip
        return [step] * count

    # -- one iteration ----------------------------------------------------------------------

    def _step_calls(self, n_train: int, n_val: int) -> int:
        return 2 * min(self.config.minibatch, max(n_train, 1)) + 1 + n_val

    def _spent(self, calls: int) -> None:
        if self._left is not None:
            self._left -= calls

    def _minibatch(self, state: SearchState, rng: random.Random) -> list[Example]:
        size = min(self.config.minibatch, len(state.train))
        batch: list[Example] = []
        while len(batch) < size:
            if not self._order:
                self._order = rng.sample(list(state.train), len(state.train))
            example = self._order.pop()
            if all(e.id != example.id for e in batch):
                batch.append(example)
        return batch

    def _parent(self, state: SearchState, rng: random.Random) -> Evaluated:
        scored = {e.candidate.id: e for e in _complete(state)}
        weights = frontier(list(scored.values()))
        if not weights:  # nothing scores anywhere: every candidate is as good a parent
            return state.best or state.history[0]
        ids = sorted(weights)
        (chosen,) = rng.choices(ids, weights=[weights[i] for i in ids])
        return scored[chosen]

    async def _mutate(
        self, state: SearchState, llm: LLM, rng: random.Random, targets: Sequence[str]
    ) -> Proposal | None:
        c = self.config
        parent = self._parent(state, rng)
        batch = self._minibatch(state, rng)
        before = await state.evaluate(parent.candidate.params, batch)
        self._spent(len(batch))
        if c.skip_perfect and all(r.score.value >= 1.0 for r in before.results):
            # nothing to reflect on: not an iteration (no optimizer call), as in the library
            self.stats["perfect_skips"] += 1
            self._perfect_in_row += 1
            return None
        self._perfect_in_row = 0
        self.stats["iterations"] += 1
        name = targets[(self.stats["iterations"] - 1) % len(targets)]
        kind = state.kinds.get(name, "text")
        request, examples = self._reflection(state, parent, before, name, kind, rng)
        asked = self.stats["calls"]
        # a version holding the confusion counts or an input shown copied the request
        quoted = quoted_lines(examples, *confusions(parent.results),
                              inputs=[r.example.inputs for r in before.results],
                              current=parent.candidate.params.get(name))  # fmt: skip
        values, key = await self._rewriters[kind].versions(
            llm, request, name=name, base=parent.candidate.params, count=1,
            taken=state.evaluated_ids(), fields=input_fields(state), rng=rng,
            quoted=quoted, kind=kind,
        )  # fmt: skip
        self._spent(self.stats["calls"] - asked)
        if not values:
            return None
        params = {**parent.candidate.params, name: values[0]}
        meta: dict[str, Any] = {
            "kind": "gepa",
            "param": name,
            "minibatch": [str(e.id) for e in batch],
        }
        after = await state.evaluate(params, batch, parent_id=parent.candidate.id,
                                     origin=self.name, meta=meta)  # fmt: skip
        self._spent(len(batch))
        meta |= {"parent_minibatch": _total(before), "child_minibatch": _total(after)}
        if _total(after) <= _total(before):
            self.stats["rejected"] += 1
            return None
        self.stats["accepted"] += 1
        self.stats["proposals"] += 1
        return Proposal(params=params, parent_id=parent.candidate.id, meta=meta, request_key=key)

    def _reflection(
        self, state: SearchState, parent: Evaluated, before: Evaluated, name: str, kind: str,
        rng: random.Random,
    ) -> tuple[LLMRequest, str]:  # fmt: skip
        """The request for a new version of parameter ``name`` (of ``kind``: text or code)
        of ``parent``, which scored ``before`` on the minibatch; and the examples it shows."""
        c = self.config
        examples = "\n\n".join(
            self._parts["example"]
            .substitute(number=i, example=self._shown(state, parent, r))
            .strip()
            for i, r in enumerate(before.results, 1)
        )
        current = parent.candidate.params.get(name)
        if kind == "code":
            system, reflect = self._parts["code_system"], self._parts["code_reflect"]
            shown, said = str(current or "").rstrip(), answers_rule(state)
        else:
            system, reflect = self._parts["system"], self._parts["reflect"]
            shown, said = str(current or ""), rules(state, current, parent.results, name=name)
        user = reflect.substitute(
            description=state.program_description.strip() or "(not described)",
            name=name,
            role=role_of(state, name),
            current=shown,
            count=len(before.results),
            examples=examples,
            rules=said,
        )
        sampled = c.temperature > 0
        request = optimizer_request(
            system, user, temperature=c.temperature, max_tokens=c.max_tokens,
            seed=rng.randrange(SEED_RANGE) if sampled else None,
        )  # fmt: skip
        return request, examples

    def _shown(self, state: SearchState, parent: Evaluated, result: ExampleResult) -> str:
        """One minibatch example: its inputs, output, expected output and feedback; then, for
        a workflow's traced run, the steps that led to the output and the values between
        them (those computed by the steps, and those the steps read from other nodes; the
        example's own inputs are shown already)."""
        limit = self.config.max_value_chars
        shown = show_example(result.example, result=result, limit=limit)
        view = traced_view(result, parent.candidate.params, state.trainable)
        if view is None:
            return shown
        given = list(result.example.inputs.values())
        read = {k: v for k, v in view.inputs.items() if v not in given}
        trace = self._parts["trace"].substitute(
            steps="\n".join(view.code), values=value_lines({**read, **view.others}, limit)
        )
        return shown + "\n" + trace.strip()

    async def _merge(self, state: SearchState, rng: random.Random) -> tuple[bool, Proposal | None]:
        """Whether a merge was tried, and its proposal if its minibatch accepted it."""
        scored = {e.candidate.id: e for e in _complete(state)}
        parents = {e.candidate.id: e.parent_id for e in state.history}
        ids = sorted(frontier(list(scored.values())))
        taken = state.evaluated_ids()
        for i, first in enumerate(ids):
            for second in ids[i + 1 :]:
                if (first, second) in self._tried:
                    continue
                self._tried.add((first, second))
                up_a, up_b = _lineage(first, parents), _lineage(second, parents)
                if first in up_b or second in up_a:
                    continue  # one descends from the other
                common = next((x for x in up_a if x in up_b and x in scored), None)
                if common is None:
                    continue
                a, b = scored[first], scored[second]
                params = merge_params(a, b, scored[common].candidate.params, state.trainable)
                if params is None or candidate_id(params) in taken:
                    continue
                return True, await self._accept_merge(state, rng, params, a, b, common)
        self._merges_due = 0  # nothing to merge until another child is accepted
        return False, None

    async def _accept_merge(
        self, state: SearchState, rng: random.Random, params: dict[str, Any],
        a: Evaluated, b: Evaluated, common: str,
    ) -> Proposal | None:  # fmt: skip
        self._merges_due -= 1
        better = a if a.score >= b.score else b
        batch = self._minibatch(state, rng)
        meta = {"kind": "merge", "parents": [a.candidate.id, b.candidate.id], "ancestor": common}
        before = await state.evaluate(better.candidate.params, batch)
        after = await state.evaluate(params, batch, parent_id=better.candidate.id,
                                     origin=self.name, meta=meta)  # fmt: skip
        self._spent(2 * len(batch))
        if _total(after) < _total(before):
            self.stats["merges_rejected"] += 1
            return None
        self.stats["merges"] += 1
        self.stats["proposals"] += 1
        return Proposal(params=params, parent_id=better.candidate.id, meta=meta)


def _total(evaluated: Evaluated) -> float:
    return sum(r.score.value for r in evaluated.results)
