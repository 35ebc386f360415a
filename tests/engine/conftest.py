"""A tiny sentiment task file for engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_sentiment import picky_model, sentiment_rows

from promptopt.llm.fakes import FakeBackend

TASK = """\
name: fake-sentiment
seed: 3
program:
  system: "Classify the sentiment."
  user: "Review: {{text}}"
  trainable: [exemplars]
  choices: [positive, negative]
  max_tokens: 3
data:
  path: rows.jsonl
  inputs: [text]
  target: label
  split: {{train: 20, val: 20, test: 20, seed: 0}}
metric: {{kind: exact}}
models: {{task: "fake:positive"}}
optimizer:
  name: exemplars
  config: {{k: 2, num_sets: 4, mutations: 2, per_step: 2}}
budget: {{max_calls: {max_calls}}}
racing: {racing}
concurrency: 4
cache: {{policy: {cache}, dir: {cache_dir}}}
output: {output}
"""


@pytest.fixture
def task_file(tmp_path: Path):
    def make(*, max_calls: int = 500, cache: str = "off", racing: bool = True) -> Path:
        (tmp_path / "rows.jsonl").write_text(
            "\n".join(json.dumps(r) for r in sentiment_rows()) + "\n", encoding="utf-8"
        )
        path = tmp_path / "task.yaml"
        path.write_text(
            TASK.format(
                max_calls=max_calls,
                racing=json.dumps(racing),
                cache=cache,
                cache_dir=json.dumps(str(tmp_path / "cache")),
                output=json.dumps(str(tmp_path / "traces")),
            ),
            encoding="utf-8",
        )
        return path

    return make


@pytest.fixture
def picky_backend() -> FakeBackend:
    return FakeBackend(picky_model)
