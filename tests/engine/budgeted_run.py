"""A small budgeted sentiment run for crash, lock and disk tests, and how to read its outcome.

The search stops on its budget: the seed costs 20 calls, each candidate up to
20, so ``MAX_CALLS = 70`` pays for the seed, two candidates and half of a third.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from fake_sentiment import sentiment_rows

from promptopt.store import RUN_FILE, RunStore

ROOT = Path(__file__).resolve().parents[2]
MAX_CALLS = 70

TASK = """\
name: budgeted-sentiment
seed: 3
program:
  system: "Classify the sentiment."
  user: "Review: {{text}}"
  trainable: [exemplars]
  max_tokens: 3
data: {{path: rows.jsonl, inputs: [text], target: label, split: {{train: 20, val: 20, test: 20}}}}
metric: {{kind: exact}}
models: {{task: {model}}}
optimizer: {{name: exemplars, config: {{k: 2, num_sets: 4, mutations: 2, per_step: 2}}}}
budget: {{max_calls: {max_calls}}}
concurrency: 4
cache: {{policy: "off"}}
output: {out}
"""


def write_task(folder: Path, model: str) -> Path:
    """The task file in ``folder`` (its runs go to ``folder/traces``); ``model`` is YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    path = folder / "task.yaml"
    out = json.dumps(str(folder / "traces"))
    path.write_text(TASK.format(model=model, max_calls=MAX_CALLS, out=out))
    return path


def only_run(output: Path) -> Path:
    (run,) = [p for p in output.iterdir() if (p / RUN_FILE).is_file()]
    return run


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``promptopt optimize ARGS`` in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "promptopt.cli", "optimize", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )


def outcome(run_dir: Path) -> dict[str, Any]:
    """What a finished run decided: best candidate, scores, decisions, paid budgeted calls."""
    best = json.loads((run_dir / "best_candidate.json").read_text())
    with RunStore.open(run_dir) as store:
        seed_id = store.candidates()[0]["id"]

        def test_score(candidate_id: str) -> float:
            rows = store.evaluations(candidate_id=candidate_id, split="test")
            return sum(r["score"] for r in rows) / len(rows)

        return {
            "status": store.status(),
            "best": best,
            "best_val": store.latest_checkpoint()[1]["best_val"],
            "seed_test": test_score(seed_id),
            "best_test": test_score(best["id"]),
            "decisions": [(d["step"], d["kind"]) for d in store.decisions()],
            "paid": store.budget_spent()["calls"],
        }


def row_counts(run_dir: Path) -> dict[str, int]:
    """Rows per table, read without writing (safe beside a live run)."""
    conn = sqlite3.connect(f"file:{run_dir / RUN_FILE}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if row[0] not in ("schema_migrations", "sqlite_sequence")
        ]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        conn.close()
