"""The task: its file (task.yaml) as validated models, its datasets and splits, its metrics.

Read in this order: :mod:`~promptopt.task.spec` (the models),
:mod:`~promptopt.task.loader` (``load_task``: YAML to a checked ``TaskSpec``),
:mod:`~promptopt.task.data` (examples and splits),
:mod:`~promptopt.task.metrics` (scoring one prediction),
:mod:`~promptopt.task.imports` (``import_ref``: a task's ``module:attr`` references).
"""

from promptopt.task.data import Example, Splits, load_splits, read_rows
from promptopt.task.imports import import_ref
from promptopt.task.loader import load_task
from promptopt.task.metrics import Metric, Score, make_metric, normalize_text, parse_verdict
from promptopt.task.spec import (
    METRIC_KINDS,
    BudgetSpec,
    CacheSpec,
    DataSpec,
    ExemplarSpec,
    LimitsSpec,
    MetricSpec,
    ModelSpec,
    ModelsSpec,
    OptimizerSpec,
    PriceSpec,
    PromptProgramSpec,
    PythonProgramSpec,
    SplitSpec,
    TaskSpec,
    task_schema,
    template_fields,
)

__all__ = [
    "METRIC_KINDS",
    "BudgetSpec",
    "CacheSpec",
    "DataSpec",
    "Example",
    "ExemplarSpec",
    "LimitsSpec",
    "Metric",
    "MetricSpec",
    "ModelSpec",
    "ModelsSpec",
    "OptimizerSpec",
    "PriceSpec",
    "PromptProgramSpec",
    "PythonProgramSpec",
    "Score",
    "SplitSpec",
    "Splits",
    "TaskSpec",
    "import_ref",
    "load_splits",
    "load_task",
    "make_metric",
    "normalize_text",
    "parse_verdict",
    "read_rows",
    "task_schema",
    "template_fields",
]
