"""Dataset files and splits: deterministic, disjoint, stable ids, clear row errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from promptopt.errors import DataError
from promptopt.task import Example, Splits, TaskSpec, load_splits, read_rows
from promptopt.task.data import in_file_order
from promptopt.task.loader import load_task

FIXTURES = Path(__file__).parent / "fixtures"


class _AnyConfig(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Registry:
    Config = _AnyConfig

    def available(self) -> list[str]:
        return ["exemplars"]

    def get(self, name: str) -> type:
        return _Registry


def _spec(tmp_path: Path, **data: object) -> TaskSpec:
    fields = {"inputs": ["text"], "target": "label", **data}
    raw = {"name": "t", "program": {"user": "{text}"}, "data": fields, "metric": {"kind": "exact"}}
    return TaskSpec.model_validate(raw).located_at(tmp_path / "task.yaml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_splits_have_the_asked_sizes_and_are_disjoint() -> None:
    splits = load_splits(load_task(FIXTURES / "sst2-mini.yaml", optimizers=_Registry()))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 8)
    assert len(splits) == 20
    ids = [e.id for part in (splits.train, splits.val, splits.test) for e in part]
    assert len(set(ids)) == 20
    texts = {e.inputs["text"] for part in (splits.train, splits.val, splits.test) for e in part}
    assert len(texts) == 20
    assert all(e.id.startswith("train-") for e in splits.train)
    assert all(e.id.startswith("test-") for e in splits["test"])
    assert {e.target for e in splits.test} <= {"positive", "negative"}


def test_splits_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    rows = "".join(f'{{"text": "t{i}", "label": "l{i}"}}\n' for i in range(30))
    _write(tmp_path / "d.jsonl", rows)
    first = load_splits(_spec(tmp_path, path="d.jsonl", split={"train": 5, "val": 5, "test": 5}))
    again = load_splits(_spec(tmp_path, path="d.jsonl", split={"train": 5, "val": 5, "test": 5}))
    other = load_splits(
        _spec(tmp_path, path="d.jsonl", split={"train": 5, "val": 5, "test": 5, "seed": 9})
    )
    assert first == again
    assert first != other


def test_ids_name_the_row_in_the_file(tmp_path: Path) -> None:
    rows = "".join(f'{{"text": "t{i}", "label": "l{i}"}}\n' for i in range(8))
    _write(tmp_path / "d.jsonl", rows)
    splits = load_splits(_spec(tmp_path, path="d.jsonl", split={"train": 4, "val": 4}))
    for example in (*splits.train, *splits.val):
        index = int(example.id.rpartition("-")[2])
        assert example.inputs == {"text": f"t{index}"} and example.target == f"l{index}"


def test_task_seed_is_the_default_split_seed(tmp_path: Path) -> None:
    rows = "".join(f'{{"text": "t{i}", "label": "l{i}"}}\n' for i in range(30))
    _write(tmp_path / "d.jsonl", rows)
    base = _spec(tmp_path, path="d.jsonl", split={"train": 10})
    seeded = base.model_copy(update={"seed": 5})
    explicit = _spec(tmp_path, path="d.jsonl", split={"train": 10, "seed": 5})
    assert load_splits(seeded) == load_splits(explicit)
    assert load_splits(base) != load_splits(seeded)


def test_explicit_files_with_limits_and_renamed_inputs() -> None:
    splits = load_splits(load_task(FIXTURES / "arithmetic.yaml", optimizers=_Registry()))
    assert [e.id for e in splits.train] == ["train-0", "train-1", "train-2", "train-3"]
    assert splits.train[0] == Example("train-0", {"q": "What is 2 + 3?"}, "5")
    assert len(splits.val) == 4
    assert splits.test[1] == Example("test-1", {"q": "What is 100 + 23?"}, 123)


def test_missing_split_files_give_empty_splits(tmp_path: Path) -> None:
    _write(tmp_path / "v.csv", "text,label\na,b\n")
    splits = load_splits(_spec(tmp_path, val="v.csv"))
    assert splits == Splits(val=(Example("val-0", {"text": "a"}, "b"),))


def test_examples_are_hashable_by_id() -> None:
    example = Example("train-0", {"text": "a"}, "b")
    assert {example: 1}[Example("train-0", {"text": "a"}, "b")] == 1


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        (
            "d.jsonl",
            '{"text": "a", "label": "b"}\nnot json\n',
            ["d.jsonl", "line 2", "invalid JSON"],
        ),
        (
            "d.jsonl",
            '{"text": "a", "label": "b"}\n\n[1, 2]\n',
            ["line 3", "expected a JSON object, got list"],
        ),
        (
            "d.jsonl",
            '{"text": "a", "label": "b"}\n{"text": "c"}\n',
            ["line 2", "missing column 'label'"],
        ),
        ("d.csv", "text,label\na,b\nc,d,e\n", ["d.csv", "line 3", "more fields than the header"]),
        ("d.csv", "text,label\na,b\nc\n", ["line 3", "fewer fields than the header"]),
        ("d.csv", "text,gold\na,b\n", ["line 2", "missing column 'label'", "'gold'"]),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, name: str, text: str, words: list[str]
) -> None:
    _write(tmp_path / name, text)
    with pytest.raises(DataError) as caught:
        load_splits(_spec(tmp_path, path=name, split={"train": 1}))
    for word in words:
        assert word in str(caught.value)


def test_too_few_rows_is_a_data_error_without_the_loader(tmp_path: Path) -> None:
    _write(tmp_path / "d.jsonl", '{"text": "a", "label": "b"}\n')
    with pytest.raises(DataError, match="fewer than the 2"):
        load_splits(_spec(tmp_path, path="d.jsonl", split={"train": 2}))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_splits(_spec(tmp_path, path="gone.jsonl", split={"train": 1}))


def test_csv_quoting_and_bom(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", '\ufefftext,label\n"a, quoted\nline",yes\n')
    rows = read_rows(path, fmt="csv")
    assert rows[0].values == {"text": "a, quoted\nline", "label": "yes"}
    assert rows[0].index == 0
    _write(tmp_path / "e.csv", "text,label\na\u2028b,c\n")
    assert read_rows(tmp_path / "e.csv", fmt="csv")[0].values == {"text": "a\u2028b", "label": "c"}


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    _write(tmp_path / "d.txt", '{"text": "a", "label": "b"}\n')
    splits = load_splits(_spec(tmp_path, path="d.txt", format="jsonl", split={"test": 1}))
    assert splits.test == (Example("test-0", {"text": "a"}, "b"),)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    sizes=st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(0, 15)),
    seed=st.integers(0, 2**32),
)
def test_splits_property(
    tmp_path_factory: pytest.TempPathFactory, rows: int, sizes: tuple[int, int, int], seed: int
) -> None:
    if sum(sizes) == 0 or sum(sizes) > rows:
        return
    folder = tmp_path_factory.mktemp("prop")
    _write(folder / "d.jsonl", "".join(f'{{"text": "t{i}", "label": "l"}}\n' for i in range(rows)))
    split = {"train": sizes[0], "val": sizes[1], "test": sizes[2], "seed": seed}
    splits = load_splits(_spec(folder, path="d.jsonl", split=split))
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    texts = [e.inputs["text"] for part in (splits.train, splits.val, splits.test) for e in part]
    assert len(set(texts)) == sum(sizes)
    assert splits == load_splits(_spec(folder, path="d.jsonl", split=split))


def test_in_file_order_sorts_by_the_row_index_an_id_ends_with() -> None:
    scores = {"test-10": 0.0, "test-2": 1.0, "test-0": 0.5, "test-9": 1.0}
    assert in_file_order(scores) == [0.5, 1.0, 1.0, 0.0]  # 0, 2, 9, 10: not as strings
