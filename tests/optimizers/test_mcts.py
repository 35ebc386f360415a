"""MCTS end to end with fake models whose every prompt has a known reward, against a search
worked out by hand, and its records in the run store.

The ladder task (ladder_fixture.py): rewards are levels / 10; each rewrite of ``X``
makes ``X.a`` and ``X.b`` (expand_width 1, num_new_prompts 2). With min_depth 1,
depth_limit 3, w_exp 5 and the levels below, by hand:

iteration 1: expand P -> P.a .6, P.b .4; simulate to P.a (depth 1: no early stop),
  expand it -> P.a.a .7, P.a.b .3; move to P.a.a: .7 > .6 at depth 2: early stop.
  Backup [P, P.a, P.a.a]: 1.8, 1.3, 0.7.
iteration 2: UCT at the root (N 1): P.a 1.3 + 5 sqrt(ln 2) = 5.463 > P.b 4.563; at P.a
  (N 1): P.a.a 4.863 > P.a.b 4.463; expand P.a.a -> .8, .2; move to P.a.a.a: .8 > .7,
  early stop. Backup: 2.6, 2.1, 1.5, 0.8.
iteration 3: at the root (N 2): P.a Q 1.7 + 5 sqrt(ln 3 / 2) = 5.406 < P.b 0.4 + 5 sqrt(ln 3)
  = 5.641: P.b; expand it -> P.b.a .9, P.b.b .1; move to P.b.a: .9 > .8, early stop.
  Backup [P, P.b, P.b.a]: 1.8, 1.3, 0.9.
final: path means .6, .65, .6: the second path, and on it P.a.a.a (.8), although
  P.b.a (.9) scored best on validation.
"""

from __future__ import annotations

import pytest
from ladder_fixture import current_text, is_feedback, ladder_model, ladder_task, rewriting_model

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.optimizers.mcts_tree import tree_from_records
from promptopt.store import RunStore

LEVELS = {"P": 5, "P.a": 6, "P.b": 4, "P.a.a": 7, "P.a.b": 3, "P.a.a.a": 8, "P.a.a.b": 2,
          "P.b.a": 9, "P.b.b": 1}  # fmt: skip
CONFIG = {"iterations": 3, "expand_width": 1, "num_new_prompts": 2, "depth_limit": 3,
          "min_depth": 1, "w_exp": 5.0, "batch_size": 2}  # fmt: skip


async def run_ladder(tmp_path, *, config=CONFIG, optimizer_model=None, max_calls=1000):
    optimizer_model = optimizer_model or FakeBackend(rewriting_model())
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="mcts", config=config, max_calls=max_calls),
        backends={"task": FakeBackend(ladder_model(LEVELS)), "optimizer": optimizer_model},
    )
    with RunStore.open(result.run_dir) as store:
        records = store.optimizer_records(optimizer="mcts")
        candidates = {c["id"]: c["params"]["system"] for c in store.candidates()}
    return result, records, candidates


def of_kind(records, kind):
    return [r["payload"] for r in records if r["kind"] == kind]


async def test_the_search_follows_uct_backup_and_the_best_path_choice(tmp_path):
    optimizer_model = FakeBackend(rewriting_model())
    result, records, names = await run_ladder(tmp_path, optimizer_model=optimizer_model)
    rows = tree_from_records(records)
    assert [(names[r["candidate"]], r["reward"], r["parent"], r["depth"]) for r in rows] == [
        ("P", 0.5, None, 0), ("P.a", 0.6, 0, 1), ("P.b", 0.4, 0, 1), ("P.a.a", 0.7, 1, 2),
        ("P.a.b", 0.3, 1, 2), ("P.a.a.a", 0.8, 3, 3), ("P.a.a.b", 0.2, 3, 3),
        ("P.b.a", 0.9, 2, 2), ("P.b.b", 0.1, 2, 2),
    ]  # fmt: skip
    backups = of_kind(records, "backup")
    assert [b["path"] for b in backups] == [[0, 1, 3], [0, 1, 3, 5], [0, 2, 7]]
    expected = [[1.8, 1.3, 0.7], [2.6, 2.1, 1.5, 0.8], [1.8, 1.3, 0.9]]
    for backup, values in zip(backups, expected, strict=True):
        assert backup["values"] == pytest.approx(values)
    # the last backup's Q and N: root [1.8, 2.6, 1.8], P.b [1.3], P.b.a [0.9]
    assert backups[-1]["q"] == pytest.approx([6.2 / 3, 1.3, 0.9])
    assert backups[-1]["n"] == [3, 1, 1]
    final = {names[r["candidate"]]: (r["q"], r["n"]) for r in rows}
    assert final["P.a"] == (pytest.approx(1.7), 2) and final["P.a.a"] == (pytest.approx(1.1), 2)
    assert final["P.a.b"] == (0.3, 0)
    (choice,) = of_kind(records, "choice")
    assert (choice["node"], choice["reason"], choice["iterations"]) == (5, "done", 3)
    assert result.best.params == {"system": "P.a.a.a"}
    assert result.scores["best_val"] == pytest.approx(0.8)
    assert result.scores["best_test"] == pytest.approx(0.8)
    assert result.stopped == "optimizer finished"
    # four expansions, a feedback call and a rewrite call each
    assert len(optimizer_model.requests) == 8
    assert result.optimizer_stats["expansions"] == 4
    assert result.optimizer_stats["noops"] == 0


async def test_error_batches_come_from_train_and_rewrites_see_the_path(tmp_path):
    optimizer_model = FakeBackend(rewriting_model())
    result, _, _ = await run_ladder(tmp_path, optimizer_model=optimizer_model)
    with RunStore.open(result.run_dir) as store:
        probes = store.evaluations(split="train")
        val_ids = {r["example_id"] for r in store.evaluations(split="val")}
    assert probes and not {r["example_id"] for r in probes} & val_ids
    assert all(r["inputs"]["text"] >= "item 100" for r in probes)
    rewrite = [r for r in optimizer_model.requests if not is_feedback(r)][2]  # of P.a.a
    assert current_text(rewrite) == "P.a.a"
    assert "1. P\n2. P.a\n3. P.a.a" in rewrite.messages[1].content
    assert "The text does not say how to decide." in rewrite.messages[1].content
    assert "expected output:" in rewrite.messages[1].content
    # sampled at the paper's temperature, each request with its own seed
    seeds = [r.seed for r in optimizer_model.requests]
    assert all(r.temperature == 1.0 for r in optimizer_model.requests)
    assert None not in seeds and len(set(seeds)) == len(seeds)


async def test_a_small_budget_scales_the_iterations_and_ends_before_an_unaffordable_expansion(
    tmp_path,
):
    # 10 seed calls, then 40: an expansion here costs 2 probes + 2 optimizer calls + 20
    result, records, names = await run_ladder(tmp_path, max_calls=50)
    (plan,) = of_kind(records, "plan")
    assert plan["iterations"] == 1  # 40 calls < 48 for the (min_depth + 1) expansions planned
    (choice,) = of_kind(records, "choice")
    assert choice["reason"] == "budget"
    # P was expanded (24 calls); P.a's expansion would need 24 of the 16 left
    assert [b["path"] for b in of_kind(records, "backup")] == [[0, 1]]
    assert result.stopped == "optimizer finished"
    assert result.best.params == {"system": "P.a"}


async def test_a_repeated_text_is_a_noop_that_changes_the_next_request(tmp_path):
    replies = iter(["<START>P<END>"])  # the first rewrite gives back the current text

    def model(request):
        if is_feedback(request):
            return "The text does not say how to decide."
        return next(replies, None) or rewriting_model()(request)

    optimizer_model = FakeBackend(model)
    config = CONFIG | {"iterations": 1}
    result, _, _ = await run_ladder(tmp_path, config=config, optimizer_model=optimizer_model)
    first, retry = [r for r in optimizer_model.requests if not is_feedback(r)][:2]
    assert retry.messages[: len(first.messages)] == first.messages
    assert retry.messages[-2].content == "<START>P<END>"
    assert "tried already" in retry.messages[-1].content
    assert retry.seed != first.seed
    assert result.optimizer_stats["noops"] == 1
    assert result.optimizer_stats["retries"] == 1
    assert result.best.params["system"].startswith("P.")


async def test_an_expansion_without_a_new_text_is_a_dead_end(tmp_path):
    def model(request):
        return "no idea" if is_feedback(request) else "<START>P<END>"

    config = CONFIG | {"iterations": 2, "retries": 0}
    result, records, _ = await run_ladder(
        tmp_path, config=config, optimizer_model=FakeBackend(model)
    )
    assert result.optimizer_stats["dead_ends"] == 1
    assert result.optimizer_stats["noops"] == 1
    # the root became terminal: the search ends with the seed, without more calls
    assert [b["path"] for b in of_kind(records, "backup")] == [[0]]
    assert result.best.params == {"system": "P"}
    assert result.stopped == "optimizer finished"
