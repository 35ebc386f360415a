"""TaskSpec models: valid task files load, defaults apply, the schema is useful."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

import promptopt.task as task_pkg
from promptopt.llm.models import ModelConfig
from promptopt.task import (
    METRIC_KINDS,
    ModelSpec,
    PromptProgramSpec,
    PythonProgramSpec,
    TaskSpec,
    load_task,
    task_schema,
    template_fields,
)
from promptopt.task.metrics import _KINDS

FIXTURES = Path(__file__).parent / "fixtures"


class _AnyConfig(BaseModel):
    model_config = ConfigDict(extra="allow")


class AnyOptimizer:
    """A registry holding one optimizer, ``exemplars``, that takes any config."""

    Config = _AnyConfig

    def available(self) -> list[str]:
        return ["exemplars"]

    def get(self, name: str) -> type:
        return AnyOptimizer


def _minimal(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "t",
        "program": {"user": "Q: {q}"},
        "data": {"path": "d.jsonl", "inputs": ["q"], "target": "a", "split": {"train": 1}},
        "metric": {"kind": "exact"},
    }
    data.update(over)
    return data


def test_public_names() -> None:
    assert sorted(task_pkg.__all__) == sorted(
        [
            "METRIC_KINDS", "BudgetSpec", "CacheSpec", "DataSpec", "Example", "ExemplarSpec",
            "LimitsSpec", "Metric", "MetricSpec", "ModelSpec", "ModelsSpec", "OptimizerSpec",
            "PriceSpec", "PromptProgramSpec", "PythonProgramSpec", "Score", "SplitSpec", "Splits",
            "TaskSpec", "import_ref", "load_splits", "load_task", "make_metric", "normalize_text",
            "parse_verdict", "read_rows", "task_schema", "template_fields",
        ]
    )  # fmt: skip
    for name in task_pkg.__all__:
        assert hasattr(task_pkg, name)


def test_metric_table_covers_every_kind() -> None:
    assert set(_KINDS) == set(METRIC_KINDS)


def test_prompt_task_loads_with_everything_resolved() -> None:
    spec = load_task(FIXTURES / "sst2-mini.yaml", optimizers=AnyOptimizer())
    assert spec.path == (FIXTURES / "sst2-mini.yaml").resolve()
    assert spec.base_dir == FIXTURES.resolve()
    assert isinstance(spec.program, PromptProgramSpec)
    assert spec.program.placeholders == ("text",)
    assert spec.program.choices == ("positive", "negative")
    assert spec.program.exemplars[0].output == "positive"
    assert spec.seed == 3
    assert spec.data.input_map == {"text": "text"}
    assert spec.models.task == ModelSpec(model="fake:positive")
    assert spec.models.optimizer is not None and spec.models.optimizer.max_concurrency == 2
    assert spec.models.for_role("judge") == spec.models.optimizer
    assert spec.cache.policy == "off"  # YAML 1.2 booleans: `off` stays a string
    assert spec.budget.max_calls == 500 and spec.budget.max_usd == 0
    assert spec.prices["openai:gpt-4o-mini"].output == 0.6


def test_explicit_files_task_loads() -> None:
    spec = load_task(FIXTURES / "arithmetic.yaml", optimizers=AnyOptimizer())
    assert spec.data.input_map == {"q": "question"}
    assert spec.data.files() == {
        "train": "qa_train.csv",
        "val": "qa_val.csv",
        "test": "qa_test.jsonl",
    }
    assert spec.metric.tolerance == 0.5
    assert spec.models.for_role("task").model == "local:smollm2"
    assert spec.models.for_role("judge").model == "local:smollm2"


def test_python_task_loads() -> None:
    spec = load_task(FIXTURES / "python_task.yaml", optimizers=AnyOptimizer())
    assert isinstance(spec.program, PythonProgramSpec)
    assert spec.program.entry == "fixture_program:run"
    assert spec.program.params["examples"] == []


def test_valid_files_load_with_the_real_registry() -> None:
    spec = load_task(FIXTURES / "arithmetic.yaml")
    assert spec.optimizer.name == "exemplars"


def test_yes_and_no_stay_strings(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"q": "is it?", "a": "yes"}\n')
    (tmp_path / "t.yaml").write_text(
        "name: yn\nprogram: {user: '{q}', choices: [yes, no]}\n"
        "data: {path: d.jsonl, inputs: [q], target: a, split: {train: 1}}\nmetric: {kind: exact}\n"
    )
    spec = load_task(tmp_path / "t.yaml", optimizers=AnyOptimizer())
    assert isinstance(spec.program, PromptProgramSpec)
    assert spec.program.choices == ("yes", "no")


def test_defaults() -> None:
    spec = TaskSpec.model_validate(_minimal())
    assert spec.path is None and spec.base_dir == Path.cwd()
    assert spec.seed == 0 and spec.concurrency is None and spec.output == "traces"
    assert spec.optimizer.name == "exemplars" and spec.optimizer.config == {}
    assert spec.cache.policy == "readwrite"
    assert isinstance(spec.program, PromptProgramSpec)
    assert spec.program.max_tokens == 64 and spec.program.temperature == 0.0
    assert spec.program.trainable == ("system", "exemplars")


def test_models_are_frozen() -> None:
    spec = TaskSpec.model_validate(_minimal())
    with pytest.raises(ValidationError):
        spec.seed = 4  # type: ignore[misc]


def test_model_string_shorthand_and_conversion() -> None:
    spec = TaskSpec.model_validate(
        _minimal(models={"task": "OpenAI:gpt-4o-mini", "judge": "fake:yes"})
    )
    assert spec.models.task.model == "openai:gpt-4o-mini"
    assert spec.models.task.provider == "openai"
    assert spec.models.task.to_config().ref.name == "gpt-4o-mini"
    assert spec.models.for_role("optimizer") == spec.models.task
    assert spec.models.for_role("judge").model == "fake:yes"
    config = spec.models.task.to_config()
    assert isinstance(config, ModelConfig) and config.model == "openai:gpt-4o-mini"


def test_label_free_metrics_need_no_target() -> None:
    data = {"path": "d.jsonl", "inputs": ["q"], "split": {"train": 1}}
    spec = TaskSpec.model_validate(
        _minimal(data=data, metric={"kind": "judge", "rubric": "polite"})
    )
    assert spec.data.target is None


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("Q: {q}", ("q",)),
        ("{a} and {b} and {a}", ("a", "b")),
        ("{{literal}} {x}", ("x",)),
        ("none", ()),
    ],
)
def test_template_fields(template: str, fields: tuple[str, ...]) -> None:
    assert template_fields(template) == fields


@pytest.mark.parametrize("template", ["{0}", "{}", "{a.b}", "{a[0]}", "{open"])
def test_template_fields_rejects(template: str) -> None:
    with pytest.raises(ValueError):
        template_fields(template)


def test_schema_is_useful() -> None:
    schema = task_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    # metric may be left out by a task whose optimizer selects with a pairwise judge (spo)
    assert set(schema["required"]) == {"name", "program", "data"}
    assert {"metric", "feedback"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    metric = schema["$defs"]["MetricSpec"]["properties"]
    assert set(metric["kind"]["enum"]) == set(METRIC_KINDS)
    assert metric["kind"]["description"]
    program = schema["$defs"]["PromptProgramSpec"]["properties"]
    assert all(field.get("description") for field in program.values())
    model = schema["$defs"]["ModelSpec"]
    assert {"type": "string"}.items() <= model["anyOf"][0].items()
    json.dumps(schema)  # plain JSON
