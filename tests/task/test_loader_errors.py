"""Every malformed task file fails with one clear line naming its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from promptopt import plugins
from promptopt.errors import OptimizerError, TaskFileError
from promptopt.task import load_task

MALFORMED = Path(__file__).parent / "malformed"
FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(MALFORMED.glob("*.yaml"))


class _FakeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    k: int = Field(3, gt=0)


class _FakeOptimizer:
    Config = _FakeConfig


class FakeRegistry:
    """Stands in for promptopt.optimizers.registry so these tests do not depend on it."""

    def available(self) -> list[str]:
        return ["exemplars", "mcts"]

    def get(self, name: str) -> type:
        if name not in self.available():
            raise OptimizerError(f"unknown optimizer {name!r}")
        return _FakeOptimizer


def _expected_field(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# field: "), (
        f"{path.name}: first line must say '# field: <field> - why'"
    )
    field = first.removeprefix("# field: ").split(" - ", 1)[0].strip()
    return "" if field == "-" else field


def test_there_are_enough_malformed_files() -> None:
    assert len(CASES) >= 14


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_malformed_file_names_its_field(path: Path) -> None:
    field = _expected_field(path)
    with pytest.raises(TaskFileError) as caught:
        load_task(str(path), optimizers=FakeRegistry())
    message = str(caught.value)
    prefix = f"{path}: {field}: " if field else f"{path}: "
    assert message.startswith(prefix), message
    assert caught.value.field == field
    assert "\n" not in message
    assert "errors.pydantic.dev" not in message and "Traceback" not in message
    assert caught.value.reason.strip(), message


def test_message_uses_the_path_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(MALFORMED.parent)
    with pytest.raises(TaskFileError) as caught:
        load_task("malformed/metric_kind.yaml", optimizers=FakeRegistry())
    assert str(caught.value) == (
        "malformed/metric_kind.yaml: metric.kind: unknown metric 'exactt'; "
        "expected one of contains, exact, f1, judge, numeric, python, regex"
    )


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("unknown_top_key", ["unknown key 'nmae'", "did you mean 'name'"]),
        ("unknown_program_key", ["unknown key 'usr'", "did you mean 'user'"]),
        ("missing_name", ["required key is missing"]),
        ("max_tokens_type", ["expected an integer", "'lots'"]),
        ("placeholder", ["{review}", "data.inputs"]),
        ("regex_compile", ["does not compile"]),
        ("split_too_large", ["60", "has 10"]),
        ("missing_data_file", ["no such file 'no_such_reviews.jsonl'"]),
        ("bad_json_row", ["line 3", "invalid JSON"]),
        ("missing_column", ["line 2", "missing column 'label'"]),
        (
            "unknown_optimizer",
            ["unknown optimizer 'mcst'", "did you mean 'mcts'", "exemplars, mcts"],
        ),
        ("bad_optimizer_config", ["greater than 0", "-2"]),
        ("optimizer_config_key", ["unknown key 'kk'", "did you mean 'k'"]),
        ("model_string", ["no provider", "gpt-4o-mini"]),
        ("model_provider", ["unknown provider 'foo'"]),
        ("python_entry", ["module.path:function"]),
        ("negative_budget", ["greater than or equal to 0", "-5"]),
        ("cache_policy", ["'off'", "'sometimes'"]),
        ("yaml_syntax", ["invalid YAML"]),
        ("duplicate_key", ["'name' appears twice"]),
        ("not_mapping", ["expected a mapping", "got a list"]),
        ("empty", ["empty"]),
    ],
)
def test_reasons_are_human(name: str, words: list[str]) -> None:
    with pytest.raises(TaskFileError) as caught:
        load_task(MALFORMED / f"{name}.yaml", optimizers=FakeRegistry())
    for word in words:
        assert word in caught.value.reason, str(caught.value)


def test_missing_task_file(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="no such task file"):
        load_task(tmp_path / "nope.yaml")


def test_a_folder_is_not_a_task_file(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="is a folder"):
        load_task(tmp_path)


def test_unknown_optimizer_lists_the_real_registry() -> None:
    with pytest.raises(TaskFileError) as caught:
        load_task(MALFORMED / "unknown_optimizer.yaml")
    assert caught.value.field == "optimizer.name"
    assert "exemplars" in caught.value.reason


def test_union_type_errors_are_merged(tmp_path: Path) -> None:
    text = (FIXTURES / "sst2-mini.yaml").read_text().replace("inputs: [text]", "inputs: 5")
    task = tmp_path / "task.yaml"
    task.write_text(text)
    with pytest.raises(TaskFileError) as caught:
        load_task(task, optimizers=FakeRegistry())
    assert caught.value.field == "data.inputs"
    assert caught.value.reason == "expected a list or a mapping, got 5"


REVIEWS = Path(__file__).resolve().parents[2] / "tasks" / "reviews"
GOOD = (REVIEWS / "task.yaml").read_text("utf-8")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("? [a, b]\n: c\n", "line 1", ["unhashable"]),
        ("[" * 3000 + "]" * 3000, "line 1", ["nested more than 64 deep"]),
        ("- " * 3000 + "x\n", "", ["nested too deeply"]),
        ("seed: " + "9" * 5000 + "\n", "", ["integer string conversion"]),
        (GOOD.replace("metric:\n", 'metric:\n  "a\\nb": 1\n'), "metric['a\\nb']", ["unknown"]),
        (GOOD.replace("metric:\n", "metric:\n  " + "k" * 500 + ": 1\n"), "metric[", ["..."]),
        (GOOD.replace("path: reviews.jsonl", "path: " + "x" * 300 + ".jsonl"), "data.path", []),
        (GOOD.replace("split: {train: 40", "split: {train: 1" + "0" * 30), "data.split", ["2**64"]),
    ],
    ids=["list-key", "flow-depth", "block-depth", "huge-int", "odd-key", "long-key",
         "long-path", "huge-split"],
)  # fmt: skip
def test_odd_files_found_by_fuzzing_fail_in_one_short_line(tmp_path, text, field, words):
    path = tmp_path / "reviews" / "task.yaml"
    path.parent.mkdir()
    (path.parent / "reviews.jsonl").write_bytes((REVIEWS / "reviews.jsonl").read_bytes())
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TaskFileError) as caught:
        load_task(str(path))
    message = str(caught.value)
    assert "\n" not in message and len(message) < len(str(path)) + 800, message
    assert caught.value.field.startswith(field), message
    assert all(word in message for word in words), message


@pytest.mark.parametrize("name", plugins.optimizers.available())
def test_the_loader_tells_pairwise_optimizers_as_the_protocol_does(name: str) -> None:
    """The loader reads PairwiseOptimizer's one extra member (``judge``) without importing the
    optimizers layer; for every registered optimizer that agrees with the protocol check."""
    from promptopt.optimizers.base import PairwiseOptimizer

    cls = plugins.optimizers.get(name)
    assert callable(getattr(cls, "judge", None)) == isinstance(cls, PairwiseOptimizer)
