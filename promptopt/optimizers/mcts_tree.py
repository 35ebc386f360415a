"""The search tree of PromptAgent's Monte Carlo tree search, with no model in it.

The rules follow the paper and its reference code (Wang et al., ICLR 2024):

- a node's ``reward`` is its score on the reward set; each backup appends to a
  node's ``cum_rewards`` the sum of the rewards from that node to the end of the
  iteration's path; ``Q`` is their mean (the reward while there are none) and
  ``N`` their count;
- ``UCT(c) = Q(c) + w_exp * sqrt(ln(N(parent) + 1) / max(1, N(c)))``; selection
  descends by UCT from the root while a node has children and is not terminal;
- a node is terminal at ``depth >= depth_limit``, below
  ``(root reward + parent reward) / 2`` once deeper than ``min_depth``, or when
  marked (a dead end: its expansion produced no child);
- a simulation stops early at a node deeper than ``min_depth`` whose reward beats
  every reward simulated so far (``threshold``, which starts at the root's);
- the final choice: among the iterations' paths, the one with the highest mean
  reward, and on it the node with the highest reward.

Ties go to the first (the earlier child, the earlier path, the shallower node),
so a search is deterministic. :func:`tree_from_records` rebuilds the tree, with
each node's last Q and N, from the records the MCTS optimizer leaves in the run
store, for reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node", "Tree", "tree_from_records"]


@dataclass(eq=False)
class Node:
    """One prompt in the tree: its candidate, how it was made, its reward and backups."""

    id: int
    parent: Node | None
    depth: int
    candidate: str
    params: Mapping[str, Any]
    reward: float
    action: str = ""  # the error feedback the rewrite was made from
    param: str = ""  # the parameter the rewrite changed
    children: list[Node] = field(default_factory=list)
    cum_rewards: list[float] = field(default_factory=list)
    terminal: bool = False

    @property
    def q(self) -> float:
        return sum(self.cum_rewards) / len(self.cum_rewards) if self.cum_rewards else self.reward

    @property
    def n(self) -> int:
        return len(self.cum_rewards)

    def ancestry(self) -> list[Node]:
        """The nodes from the root down to this one."""
        line: list[Node] = []
        node: Node | None = self
        while node is not None:
            line.append(node)
            node = node.parent
        return line[::-1]


class Tree:
    """The tree from one root, with the selection, simulation and backup rules."""

    def __init__(
        self,
        *,
        candidate: str,
        params: Mapping[str, Any],
        reward: float,
        w_exp: float,
        depth_limit: int,
        min_depth: int,
    ) -> None:
        self.w_exp = w_exp
        self.depth_limit = depth_limit
        self.min_depth = min_depth
        self.root = Node(0, None, 0, candidate, dict(params), reward)
        self.nodes: list[Node] = [self.root]
        self.threshold = reward  # the best reward simulated so far

    def add(
        self,
        parent: Node,
        *,
        candidate: str,
        params: Mapping[str, Any],
        reward: float,
        action: str = "",
        param: str = "",
    ) -> Node:
        """A new child of ``parent``, numbered in creation order."""
        child = Node(len(self.nodes), parent, parent.depth + 1, candidate, dict(params), reward,
                     action, param)  # fmt: skip
        parent.children.append(child)
        self.nodes.append(child)
        return child

    # -- the rules ---------------------------------------------------------------

    def uct(self, node: Node) -> float:
        parent_n = node.parent.n if node.parent is not None else 0
        return node.q + self.w_exp * math.sqrt(math.log(parent_n + 1) / max(1, node.n))

    def at_depth_limit(self, node: Node) -> bool:
        return node.depth >= self.depth_limit

    def is_terminal(self, node: Node) -> bool:
        if node.terminal or self.at_depth_limit(node):
            return True
        floor = self.root.reward
        if node.parent is not None:
            floor = (self.root.reward + node.parent.reward) / 2
        return node.reward < floor and node.depth > self.min_depth

    def early_stop(self, node: Node) -> bool:
        return node.reward > self.threshold and node.depth > self.min_depth

    def raise_threshold(self, reward: float) -> None:
        self.threshold = max(self.threshold, reward)

    # -- the steps ---------------------------------------------------------------

    def select(self) -> list[Node]:
        """The path from the root, by UCT, to a node without children or a terminal one."""
        path = [self.root]
        while path[-1].children and not self.is_terminal(path[-1]):
            path.append(max(path[-1].children, key=self.uct))
        return path

    @staticmethod
    def best_child(node: Node) -> Node:
        """The child with the highest reward (what a greedy simulation moves to)."""
        return max(node.children, key=lambda c: c.reward)

    @staticmethod
    def backup(path: Sequence[Node]) -> list[float]:
        """Append to each node on ``path`` the sum of rewards from it to the path's end."""
        total, values = 0.0, []
        for node in reversed(path):
            total += node.reward
            node.cum_rewards.append(total)
            values.append(total)
        return values[::-1]

    @staticmethod
    def choice(paths: Iterable[Sequence[Node]]) -> Node | None:
        """The highest-reward node of the path with the highest mean reward."""
        paths = [p for p in paths if p]
        if not paths:
            return None
        best = max(paths, key=lambda p: sum(n.reward for n in p) / len(p))
        return max(best, key=lambda n: n.reward)


def tree_from_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tree as rows, one per node in creation order, from the MCTS run-store records.

    Each row: ``node``, ``parent``, ``depth``, ``candidate``, ``param``, ``action``,
    ``reward``, and the ``q`` and ``n`` of its last backup (its reward and 0 before
    any). ``records`` are the rows of ``RunStore.optimizer_records(optimizer="mcts")``
    (their ``kind`` and ``payload``).
    """
    rows: dict[int, dict[str, Any]] = {}
    for record in records:
        payload = record["payload"]
        if record["kind"] == "node":
            rows[payload["node"]] = {**payload, "q": payload["reward"], "n": 0}
        elif record["kind"] == "backup":
            for node, q, n in zip(payload["path"], payload["q"], payload["n"], strict=True):
                rows[node].update(q=q, n=n)
    return [rows[key] for key in sorted(rows)]
