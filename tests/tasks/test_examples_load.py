"""The example tasks under tasks/ load, and their splits have the declared sizes and every label."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from promptopt.task.data import SPLIT_NAMES, data_files, load_splits, read_rows, to_examples
from promptopt.task.loader import load_task

TASKS = Path(__file__).resolve().parents[2] / "tasks"
EXAMPLES = {
    "reviews": ("positive", "negative"),
    "tickets": ("billing", "shipping", "technical", "account"),
}


@pytest.fixture(params=sorted(EXAMPLES))
def example(request: pytest.FixtureRequest) -> str:
    return request.param


def test_task_file_loads(example: str) -> None:
    spec = load_task(TASKS / example / "task.yaml")
    assert spec.name == example
    assert tuple(spec.program.choices) == EXAMPLES[example]
    assert spec.models.task.provider == "local"
    assert spec.optimizer.name == "exemplars"
    assert "exemplars" in spec.program.trainable


def test_task_file_points_editors_at_the_schema(example: str) -> None:
    first = (TASKS / example / "task.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../task.schema.json"


def test_splits_have_declared_sizes_and_every_label(example: str) -> None:
    spec = load_task(TASKS / example / "task.yaml")
    splits = load_splits(spec)
    for name in SPLIT_NAMES:
        rows = splits[name]
        assert len(rows) == getattr(spec.data.split, name), name
        labels = Counter(str(e.target) for e in rows)
        assert set(labels) == set(EXAMPLES[example]), (name, labels)
    ids = [e.id for name in SPLIT_NAMES for e in splits[name]]
    assert len(ids) == len(set(ids))


def test_whole_dataset_is_balanced_and_has_no_duplicates(example: str) -> None:
    spec = load_task(TASKS / example / "task.yaml")
    path = data_files(spec)["path"]
    rows = to_examples(
        read_rows(path, fmt=spec.data.format_of(path.name)), data=spec.data, path=path
    )
    assert len(rows) == 200
    texts = [" ".join(map(str, e.inputs.values())).strip().lower() for e in rows]
    assert len(texts) == len(set(texts))
    counts = Counter(str(e.target) for e in rows)
    assert max(counts.values()) - min(counts.values()) <= 2, counts


def test_optimization_fits_the_call_budget(example: str) -> None:
    """Seed on val, every proposed set on val, seed and best on test: all under max_calls."""
    spec = load_task(TASKS / example / "task.yaml")
    config = spec.optimizer.config
    split = spec.data.split
    needed = split.val + (config["num_sets"] + config["mutations"]) * split.val + 2 * split.test
    assert spec.budget.max_calls is not None
    assert needed <= spec.budget.max_calls
