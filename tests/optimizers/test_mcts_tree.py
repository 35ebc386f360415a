"""The MCTS tree rules against numbers computed by hand (w_exp 2.5 unless said)."""

from __future__ import annotations

import math

import pytest

from promptopt.optimizers.mcts_tree import Tree, tree_from_records


def make_tree(**rules) -> Tree:
    settings = {"w_exp": 2.5, "depth_limit": 4, "min_depth": 1} | rules
    return Tree(candidate="root", params={"system": "P"}, reward=0.5, **settings)


def grow(tree: Tree, parent, name: str, reward: float):
    return tree.add(parent, candidate=name, params={"system": name}, reward=reward)


def test_backup_appends_the_sum_of_rewards_to_the_end_of_the_path():
    tree = make_tree()
    a = grow(tree, tree.root, "a", 0.6)
    aa = grow(tree, a, "aa", 0.7)
    assert Tree.backup([tree.root, a, aa]) == pytest.approx([1.8, 1.3, 0.7])
    assert Tree.backup([tree.root, a]) == pytest.approx([1.1, 0.6])
    # Q = mean of the backed-up sums, N = how many
    assert (tree.root.q, tree.root.n) == (pytest.approx(1.45), 2)
    assert (a.q, a.n) == (pytest.approx(0.95), 2)
    assert (aa.q, aa.n) == (pytest.approx(0.7), 1)


def test_q_is_the_reward_until_the_first_backup():
    tree = make_tree()
    b = grow(tree, tree.root, "b", 0.4)
    assert (b.q, b.n) == (0.4, 0)


def test_uct_values_and_the_choice_they_make():
    tree = make_tree()
    a = grow(tree, tree.root, "a", 0.6)
    b = grow(tree, tree.root, "b", 0.4)
    aa = grow(tree, a, "aa", 0.7)
    Tree.backup([tree.root, a, aa])  # root [1.8], a [1.3], aa [0.7]
    # UCT(a) = 1.3 + 2.5 * sqrt(ln 2 / 1) = 3.38139; UCT(b) = 0.4 + 2.5 * sqrt(ln 2 / 1) = 2.48139
    assert tree.uct(a) == pytest.approx(3.3813865, abs=1e-6)
    assert tree.uct(b) == pytest.approx(2.4813865, abs=1e-6)
    assert tree.select() == [tree.root, a, aa]
    Tree.backup([tree.root, a, aa])
    Tree.backup([tree.root, a, aa])  # root N = 3, a: Q 1.3, N 3
    # UCT(a) = 1.3 + 2.5 * sqrt(ln 4 / 3) = 2.99944; UCT(b) = 0.4 + 2.5 * sqrt(ln 4 / 1) = 3.34353
    assert tree.uct(a) == pytest.approx(2.9994450, abs=1e-6)
    assert tree.uct(b) == pytest.approx(3.3435251, abs=1e-6)
    assert tree.select() == [tree.root, b]


def test_the_root_has_no_parent_visits_so_only_its_q_counts():
    tree = make_tree()
    assert tree.uct(tree.root) == 0.5  # ln(0 + 1) = 0


def test_ties_go_to_the_first_child():
    tree = make_tree()
    first = grow(tree, tree.root, "x", 0.6)
    grow(tree, tree.root, "y", 0.6)
    assert tree.select() == [tree.root, first]
    assert Tree.best_child(tree.root) is first


def test_terminal_rules():
    tree = make_tree(depth_limit=3, min_depth=1)
    a = grow(tree, tree.root, "a", 0.2)  # depth 1: the low-reward rule waits past min_depth
    assert not tree.is_terminal(a)
    aa = grow(tree, a, "aa", 0.7)
    low = grow(tree, aa, "low", 0.55)  # floor (0.5 + 0.7) / 2 = 0.6, depth 3 > 1
    assert tree.is_terminal(low)
    ab = grow(tree, a, "ab", 0.34)  # floor (0.5 + 0.2) / 2 = 0.35
    assert tree.is_terminal(ab)
    ac = grow(tree, a, "ac", 0.35)
    assert not tree.is_terminal(ac)
    deep = grow(tree, ac, "deep", 0.9)
    assert tree.at_depth_limit(deep) and tree.is_terminal(deep)
    ac.terminal = True  # a dead end
    assert tree.is_terminal(ac)


def test_early_stop_beats_the_best_reward_simulated_below_min_depth_only():
    tree = make_tree(min_depth=1)
    a = grow(tree, tree.root, "a", 0.9)
    aa = grow(tree, a, "aa", 0.6)
    assert tree.threshold == 0.5  # the root's reward
    assert not tree.early_stop(a)  # depth 1 is not deeper than min_depth
    assert tree.early_stop(aa)
    tree.raise_threshold(0.7)
    assert not tree.early_stop(aa)
    tree.raise_threshold(0.3)
    assert tree.threshold == 0.7


def test_the_final_choice_is_the_best_node_of_the_best_mean_path():
    tree = make_tree()
    a = grow(tree, tree.root, "a", 0.6)
    aa = grow(tree, a, "aa", 0.8)
    b = grow(tree, tree.root, "b", 0.4)
    bb = grow(tree, b, "bb", 0.95)
    # means: [0.5, 0.6, 0.8] 0.633; [0.5, 0.4, 0.95] 0.617: the global best bb loses
    assert Tree.choice([[tree.root, b, bb], [tree.root, a, aa]]) is aa
    assert Tree.choice([]) is None
    # a tie of means goes to the earlier path, a tie of rewards to the shallower node
    c = grow(tree, tree.root, "c", 0.5)
    assert Tree.choice([[tree.root, c], [tree.root, grow(tree, tree.root, "d", 0.5)]]) is tree.root


def test_ancestry_runs_from_the_root():
    tree = make_tree()
    a = grow(tree, tree.root, "a", 0.6)
    aa = grow(tree, a, "aa", 0.7)
    assert aa.ancestry() == [tree.root, a, aa]
    assert [n.id for n in tree.nodes] == [0, 1, 2] and aa.depth == 2


def test_tree_from_records_keeps_each_nodes_last_backup():
    records = [
        {"kind": "plan", "payload": {"iterations": 2}},
        {"kind": "node", "payload": {"node": 0, "parent": None, "reward": 0.5}},
        {"kind": "node", "payload": {"node": 1, "parent": 0, "reward": 0.6}},
        {"kind": "node", "payload": {"node": 2, "parent": 0, "reward": 0.4}},
        {"kind": "backup", "payload": {"path": [0, 1], "q": [1.1, 0.6], "n": [1, 1]}},
        {"kind": "backup", "payload": {"path": [0, 1], "q": [1.1, 0.6], "n": [2, 2]}},
    ]
    rows = tree_from_records(records)
    assert [(r["node"], r["parent"], r["q"], r["n"]) for r in rows] == [
        (0, None, 1.1, 2),
        (1, 0, 0.6, 2),
        (2, 0, 0.4, 0),
    ]
    assert math.isclose(rows[2]["reward"], 0.4)
