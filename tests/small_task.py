"""A small task file over the shipped reviews data, with the models section left to the test."""

from __future__ import annotations

import shutil
from pathlib import Path

REVIEWS = Path(__file__).resolve().parents[1] / "tasks" / "reviews" / "reviews.jsonl"
TASK = """\
name: reviews
program: {{system: "Positive or negative?", user: "{{text}}", choices: [positive, negative]}}
data: {{path: reviews.jsonl, inputs: [text], target: label, split: {{train: 4, val: 4, test: 4}}}}
metric: {{kind: exact}}
models:
{models}
optimizer: {{name: exemplars, config: {{k: 1, num_sets: 2, mutations: 1, per_step: 2}}}}
budget: {{max_calls: 50}}
cache: {{policy: "off"}}
concurrency: 2
"""


def write_small_task(folder: Path, models: str) -> Path:
    """``folder/task.yaml`` with ``models`` (indented YAML lines) and the data file beside it."""
    shutil.copy(REVIEWS, folder / "reviews.jsonl")
    path = folder / "task.yaml"
    path.write_text(TASK.format(models=models), encoding="utf-8")
    return path
