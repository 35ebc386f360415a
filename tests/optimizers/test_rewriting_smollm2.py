"""MCTS and OPRO on the real SmolLM2-135M, as task and optimizer model, on the triage workflow:
whatever a 135M model writes, the run completes, every reply is counted, and the best
candidate is never worse than the seed on validation."""

from __future__ import annotations

import pytest

from promptopt.api import aoptimize
from promptopt.store import RunStore

CONFIGS = {
    "mcts": {"iterations": 1, "expand_width": 1, "depth_limit": 1, "batch_size": 2,
             "max_tokens": 150},
    "opro": {"steps": 1, "per_step": 2, "exemplars": 2, "max_tokens": 150},
}  # fmt: skip


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(CONFIGS))
async def test_a_rewriting_optimizer_completes_on_smollm2(name, triage_task):
    task = triage_task(
        optimizer=name,
        config=CONFIGS[name],
        split={"train": 4, "val": 4, "test": 2, "seed": 0},
        models={"task": "local:smollm2"},
        max_calls=80,
    )
    result = await aoptimize(task)
    stats = result.optimizer_stats
    assert result.stopped == "optimizer finished"
    assert stats["calls"] == stats["replies"] >= 1
    # each request sent once, plus one changed retry after a reply with nothing new
    asked = 1 if name == "mcts" else 2
    assert asked <= stats["calls"] <= 2 * asked
    assert stats["retries"] == stats["calls"] - asked <= stats["noops"] + stats["invalid"]
    with RunStore.open(result.run_dir) as store:  # the reported best is what was measured
        best_rows = store.evaluations(candidate_id=result.best.id, split="val")
    assert best_rows, "the best candidate was never scored on validation"
    mean = sum(r["score"] for r in best_rows) / len(best_rows)
    assert result.scores["best_val"] == pytest.approx(mean)
    with RunStore.open(result.run_dir) as store:
        optimizer_calls = [c for c in store.llm_calls() if c["tag"] == "optimizer"]
    feedback = stats.get("feedback_calls", 0)
    assert len(optimizer_calls) == stats["replies"] + feedback
