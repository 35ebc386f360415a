"""PromptAgent (Wang et al., ICLR 2024): Monte Carlo tree search over prompts, grown by error feedback.

A node is a candidate; its reward is its score on the validation split, which
the engine measures for every proposal: the validation split is the reward set.
Error batches come from the training split only, so a reward is never measured
on the examples a rewrite was made from (the reference code lets them overlap).

Each ``propose`` call runs the search until it needs new nodes and returns the
children of one expansion; ``observe`` gives them their rewards and the next
call goes on. One iteration (the rules are in :mod:`~promptopt.optimizers.mcts_tree`):

1. select a leaf from the root by UCT;
2. expand it, unless it is terminal: sample ``expand_width`` training batches
   (disjoint while the training split is large enough) and run the leaf's
   candidate once on their union (``state.evaluate``, through the engine); then,
   for every batch at once, the optimizer model explains the failures (feedback
   call) and writes ``num_new_prompts`` new versions of one text parameter from
   the current text, the failures, that feedback and the versions on the path
   from the root (rewrite call). The engine scores the children together;
3. simulate greedily: move to the child with the highest reward, expanding
   when it has none, until a terminal node or an early stop;
4. back up: each node on the path gets the sum of rewards from it to the end.

After every step ``state.chosen`` holds the final choice so far: the
highest-reward node on the path (of the finished iterations and the current
one) with the highest mean reward. A batch of one expansion rewrites the next
text parameter in turn, when the program has several.

Under a call budget the paper's 12 iterations are scaled down to what the
remaining calls cover (an iteration costs about ``min_depth + 1`` expansions,
measured as the search goes), and the search ends before an expansion the
remaining calls cannot cover, keeping its choice.

The tree goes to the run store through ``state.record``: a ``plan`` record,
then one ``node`` record per node (``node``, ``parent``, ``depth``,
``candidate``, ``param``, ``action``: the feedback it was rewritten from,
``reward``), one ``backup`` record per iteration (``path``, the ``values``
appended, each node's ``q`` and ``n`` after it) and a last ``choice`` record;
:func:`~promptopt.optimizers.mcts_tree.tree_from_records` reads them back.

The meta-prompt lives in ``templates/mcts.txt`` (parts ``system``,
``feedback``, ``rewrite``, ``errors``, ``no_errors``, ``example``, ``retry``).
Replies with no new version (the current text, or one scored already) are
counted as no-ops and asked again, changed (see :mod:`~promptopt.optimizers.rewriters`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from promptopt.errors import BadRequestError, OptimizerError
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.answers import rules
from promptopt.optimizers.base import (
    Evaluated,
    ExampleResult,
    Proposal,
    SearchState,
    candidate_id,
    config_of,
    gather_all,
)
from promptopt.optimizers.mcts_tree import Node, Tree
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.optimizers.rewriters import (
    SEED_RANGE,
    MarkedRewriter,
    RewriteConfig,
    Versions,
    quoted_lines,
    show_example,
    text_targets,
)
from promptopt.optimizers.shown import clip_text, input_fields, role_of

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = ["MCTS", "MCTSConfig"]

_ACTION_CHARS = 2000
_STATS = ("iterations", "expansions", "feedback_calls", "proposals", "dead_ends")


class MCTSConfig(RewriteConfig):
    iterations: int = Field(
        12, ge=1, description="Iterations (paper: 12); fewer when the budget cannot cover them."
    )
    expand_width: int = Field(
        3, ge=1, le=16, description="Training batches per expansion, each rewritten (paper: 3)."
    )
    num_new_prompts: int = Field(1, ge=1, le=8, description="New versions per batch (paper: 1).")
    depth_limit: int = Field(8, ge=1, description="Nodes this deep are terminal (paper: 8).")
    min_depth: int = Field(
        2, ge=0, description="Early stop and the low-reward rule apply deeper than this (paper: 2)."
    )
    w_exp: float = Field(2.5, ge=0.0, description="Exploration weight of UCT (paper: 2.5).")
    batch_size: int = Field(5, ge=1, description="Training examples per batch (paper: 5).")
    scale_to_budget: bool = Field(
        True, description="Scale the iterations down to what the remaining calls cover."
    )


@dataclass(frozen=True, slots=True)
class _Child:
    """A proposed child, waiting for its reward."""

    parent: Node
    param: str
    action: str


class MCTS:
    """Propose the children of one expansion per step; the engine scores them on validation."""

    name: ClassVar[str] = "mcts"
    Config: ClassVar[type[BaseModel]] = MCTSConfig

    def __init__(self, config: MCTSConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_of(MCTSConfig, config)
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._parts = template_parts("mcts")
        self._rewriter = MarkedRewriter(
            stats=self.stats, retries=self.config.retries, retry=self._parts["retry"]
        )
        self.tree: Tree | None = None
        self.iterations = self.config.iterations
        self.paths: list[list[Node]] = []
        self._path: list[Node] = []
        self._simulating = False
        self._done = False
        self._pending: dict[str, _Child] = {}
        self._targets: list[str] = []
        self._cost = 0  # calls one expansion takes, at most (estimated, then measured)
        self._calls_before: int | None = None

    # -- the protocol --------------------------------------------------------

    async def propose(self, state: SearchState, *, llm: LLM, rng: random.Random) -> list[Proposal]:
        tree = self.tree or self._start(state)
        self._measure(state)
        while not self._done:
            if not self._simulating:
                if self.stats["iterations"] >= self.iterations or tree.is_terminal(tree.root):
                    self._finish(state)
                    break
                self._path = tree.select()
                self._simulating = True
                leaf = self._path[-1]
                if tree.at_depth_limit(leaf):
                    self._end_iteration(state)
                elif not tree.is_terminal(leaf):
                    proposals = await self._expand(leaf, state, llm, rng)
                    if proposals:
                        return proposals
                continue
            node = self._path[-1]
            if tree.early_stop(node):
                tree.raise_threshold(node.reward)
                self._end_iteration(state)
                continue
            tree.raise_threshold(node.reward)
            if tree.is_terminal(node):
                self._end_iteration(state)
            elif not node.children:
                proposals = await self._expand(node, state, llm, rng)
                if proposals:
                    return proposals
            else:
                self._path.append(tree.best_child(node))
        return []

    def observe(self, state: SearchState, results: list[Evaluated]) -> None:
        """Give this step's children their rewards and put them in the tree."""
        assert self.tree is not None
        for evaluated in results:
            child = self._pending.pop(evaluated.candidate.id, None)
            if child is None:
                continue
            node = self.tree.add(
                child.parent,
                candidate=evaluated.candidate.id,
                params=evaluated.candidate.params,
                reward=evaluated.score,
                action=child.action,
                param=child.param,
            )
            state.record("node", _node_record(node))
        self._pending.clear()
        self._choose(state)

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        """Task-model calls the search can make after the seed is scored (an upper bound on
        the paper's shape: about ``min_depth + 1`` expansions an iteration); the optimizer
        model's own calls are ``2 * expand_width`` an expansion more."""
        c = self.config
        batches = min(c.expand_width * c.batch_size, n_train)
        per_expansion = batches + c.expand_width * c.num_new_prompts * n_val
        return c.iterations * (c.min_depth + 1) * per_expansion

    def plan_steps(self, *, calls: int | None, n_train: int, n_val: int) -> list[int]:
        """The calls of each expansion (a step) within ``calls``: its error batches, two
        optimizer calls a branch, and its children on the validation rows; the iterations
        scale to ``calls`` as the search does, and a share below one expansion plans none."""
        c = self.config
        cost = min(c.expand_width * c.batch_size, n_train) + c.expand_width * (
            2 + c.num_new_prompts * n_val
        )
        iterations = c.iterations
        if calls is not None:
            if calls < cost:
                return []
            if c.scale_to_budget:
                iterations = max(1, min(iterations, calls // (cost * (c.min_depth + 1))))
            return [cost] * min(iterations * (c.min_depth + 1), calls // cost)
        return [cost] * (iterations * (c.min_depth + 1))

    # -- the search ----------------------------------------------------------

    def _start(self, state: SearchState) -> Tree:
        c = self.config
        self._targets = text_targets(state, c.params, optimizer=self.name)
        if not state.train:
            raise OptimizerError(
                "the mcts optimizer draws its error batches from the training split, which is "
                "empty; give data.split.train some examples"
            )
        seed = next(e for e in state.history if e.candidate.id == state.seed.id)
        self.tree = Tree(candidate=seed.candidate.id, params=seed.candidate.params,
                         reward=seed.score, w_exp=c.w_exp, depth_limit=c.depth_limit,
                         min_depth=c.min_depth)  # fmt: skip
        batches = min(c.expand_width * c.batch_size, len(state.train))
        self._cost = batches + c.expand_width * (2 + c.num_new_prompts * len(state.val))
        remaining = state.remaining_calls
        if c.scale_to_budget and remaining is not None:
            affordable = remaining // (self._cost * (c.min_depth + 1))
            self.iterations = max(1, min(c.iterations, affordable))
        # no call counts here: a resumed run replays the search with other counts
        state.record("plan", {"iterations": self.iterations, "params": self._targets,
                              "config": c.model_dump(mode="json")})  # fmt: skip
        state.record("node", _node_record(self.tree.root))
        self._choose(state)
        return self.tree

    def _measure(self, state: SearchState) -> None:
        """Learn what the last expansion cost, probe and children's scoring included."""
        if self._calls_before is not None and state.remaining_calls is not None:
            self._cost = max(self._cost, self._calls_before - state.remaining_calls)
        self._calls_before = None

    def _end_iteration(self, state: SearchState) -> None:
        values = Tree.backup(self._path)
        self.paths.append(list(self._path))
        self.stats["iterations"] += 1
        self._simulating = False
        state.record("backup", {
            "iteration": self.stats["iterations"], "path": [n.id for n in self._path],
            "values": values, "q": [n.q for n in self._path], "n": [n.n for n in self._path],
        })  # fmt: skip
        self._choose(state)

    def _finish(self, state: SearchState, *, reason: str = "done") -> None:
        self._done = True
        chosen = self._choose(state)
        state.record("choice", {"node": chosen.id, "candidate": chosen.candidate,
                                "reason": reason, "iterations": self.stats["iterations"]})  # fmt: skip

    def _choose(self, state: SearchState) -> Node:
        assert self.tree is not None
        paths = [*self.paths, self._path] if self._simulating else self.paths
        chosen = Tree.choice(paths) or self.tree.root
        state.chosen = chosen.candidate
        return chosen

    # -- one expansion -------------------------------------------------------

    async def _expand(
        self, node: Node, state: SearchState, llm: LLM, rng: random.Random
    ) -> list[Proposal]:
        """The children of ``node``; none (and ``node`` marked a dead end) when no rewrite
        came back new. Ends the search instead when the budget cannot cover an expansion."""
        if state.remaining_calls is not None and state.remaining_calls < self._cost:
            self._end_iteration(state)
            self._finish(state, reason="budget")
            return []
        self._calls_before = state.remaining_calls
        c = self.config
        batches = _batches(state.train, c.expand_width, c.batch_size, rng)
        union = list({str(e.id): e for batch in batches for e in batch}.values())
        probe = await state.evaluate(node.params, union)
        by_id = {str(r.example.id): r for r in probe.results}
        first = self.stats["expansions"] * c.expand_width
        self.stats["expansions"] += 1
        taken = state.evaluated_ids()
        # each branch gets its own rng, drawn here in order: the branches run concurrently
        branches = [
            self._branch(
                state, llm, node, self._targets[(first + i) % len(self._targets)],
                [by_id[str(e.id)] for e in batch if str(e.id) in by_id],
                taken, random.Random(rng.randrange(SEED_RANGE)),
            )
            for i, batch in enumerate(batches)
        ]  # fmt: skip
        proposals: list[Proposal] = []
        for param, action, (values, key) in await gather_all(*branches):
            for value in values:
                params = {**node.params, param: value}
                cid = candidate_id(params)
                if cid in taken:  # another batch of this expansion wrote the same text
                    self.stats["noops"] += 1
                    continue
                taken.add(cid)
                self._pending[cid] = _Child(node, param, clip_text(action, _ACTION_CHARS))
                proposals.append(Proposal(params=params, parent_id=node.candidate, meta={
                    "kind": "mcts", "parent_node": node.id, "param": param,
                    "depth": node.depth + 1,
                }, request_key=key))  # fmt: skip
        self.stats["proposals"] += len(proposals)
        if not proposals:
            node.terminal = True
            self.stats["dead_ends"] += 1
        return proposals

    async def _branch(
        self,
        state: SearchState,
        llm: LLM,
        node: Node,
        param: str,
        results: Sequence[ExampleResult],
        taken: set[str],
        rng: random.Random,
    ) -> tuple[str, str, Versions]:
        """One batch: the feedback call, then the rewrite call; ``(param, feedback, versions)``."""
        c = self.config
        failing = [r for r in results if r.failed]
        fill = {
            "description": state.program_description.strip() or "(not described)",
            "name": param,
            "role": role_of(state, param),
            "current": str(node.params.get(param, "")),
            "situation": self._parts["errors" if failing else "no_errors"].template.strip(),
            "examples": self._examples(shown := failing or list(results)),
        }
        self.stats["feedback_calls"] += 1
        try:
            feedback = (await llm.acomplete(self._request("feedback", fill, rng))).text.strip()
        except BadRequestError:  # the prompt does not fit the model
            self.stats["request_errors"] += 1
            return param, "", Versions([])
        fill |= {
            "feedback": feedback or "(none)",
            "trajectory": _trajectory(node, param, c.max_value_chars * 2),
            "count": "one new version"
            if c.num_new_prompts == 1
            else f"{c.num_new_prompts} new versions",
            "rules": rules(state, node.params.get(param), results, name=param),
        }
        values = await self._rewriter.versions(
            llm, self._request("rewrite", fill, rng), name=param, base=node.params,
            count=c.num_new_prompts, taken=taken, fields=input_fields(state), rng=rng,
            quoted=quoted_lines(fill["examples"], inputs=[r.example.inputs for r in shown],
                                current=node.params.get(param)),
        )  # fmt: skip
        return param, feedback, values

    def _request(self, part: str, fill: Mapping[str, str], rng: random.Random) -> LLMRequest:
        sampled = self.config.temperature > 0
        return optimizer_request(
            self._parts["system"],
            self._parts[part].substitute(fill),
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            # a seed makes two equal sampled requests two requests (and replayable)
            seed=rng.randrange(SEED_RANGE) if sampled else None,
        )

    def _examples(self, results: Sequence[ExampleResult]) -> str:
        limit = self.config.max_value_chars
        return "\n\n".join(
            self._parts["example"]
            .substitute(number=number, example=show_example(r.example, result=r, limit=limit))
            .strip()
            for number, r in enumerate(results, 1)
        )


def _batches(
    train: Sequence[Example], width: int, size: int, rng: random.Random
) -> list[list[Example]]:
    """``width`` batches of ``size`` training examples: disjoint while there are enough,
    then each drawn from the whole split."""
    size = min(size, len(train))
    if width * size <= len(train):
        drawn = rng.sample(list(train), width * size)
        return [drawn[i * size : (i + 1) * size] for i in range(width)]
    return [rng.sample(list(train), size) for _ in range(width)]


def _trajectory(node: Node, param: str, limit: int) -> str:
    """The versions of ``param`` from the root to ``node``, oldest first, repeats left out."""
    versions: list[str] = []
    for step in node.ancestry():
        value = str(step.params.get(param, ""))
        if not versions or versions[-1] != value:
            versions.append(value)
    return "\n".join(f"{i}. {clip_text(v, limit)}" for i, v in enumerate(versions, 1))


def _node_record(node: Node) -> dict[str, Any]:
    return {
        "node": node.id,
        "parent": node.parent.id if node.parent is not None else None,
        "depth": node.depth,
        "candidate": node.candidate,
        "param": node.param,
        "action": node.action,
        "reward": node.reward,
    }
