"""The task file as frozen pydantic models: :class:`TaskSpec` and its parts.

The parts with a module of their own are re-exported here: :mod:`~promptopt.task.model_spec`
(``models:``), :mod:`~promptopt.task.optimizer_spec` (``optimizer:`` and its stages),
:mod:`~promptopt.task.feedback_spec` (``feedback:`` rules), :mod:`~promptopt.task.run_spec`
(budget, cache, sandbox, prices), on the shared base in :mod:`~promptopt.task.frozen`.

The models check all that needs neither the disk nor the optimizer registry:
types, unknown keys (every model forbids extras), names, model strings,
placeholders against ``data.inputs``, metric options against the kind. Data
files and the optimizer are checked by :mod:`promptopt.task.loader`. A
cross-field check raises :class:`FieldIssue`, which names the dotted field it is
about, so errors point at ``program.user`` rather than the whole model.
``TaskSpec.path``/``base_dir`` are private attributes, not fields: they never
appear in the schema, in dumps, or as task-file keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from promptopt import plugins
from promptopt.task.feedback_spec import OTHER_RULE, FeedbackRuleSpec
from promptopt.task.frozen import NAME_RE, FieldIssue, Frozen, check_regex
from promptopt.task.model_spec import ModelSpec, ModelsSpec, check_model_string
from promptopt.task.optimizer_spec import OPTIMIZER_TAGS, OptimizerSpec, OptimizerStages
from promptopt.task.placeholders import template_fields
from promptopt.task.run_spec import BudgetSpec, CacheSpec, PriceSpec, RacingSpec, SandboxSpec

__all__ = [
    "METRIC_KINDS",
    "OPTIMIZER_TAGS",
    "OTHER_RULE",
    "PROGRAM_TAGS",
    "BudgetSpec",
    "CacheSpec",
    "DataSpec",
    "ExemplarSpec",
    "FeedbackRuleSpec",
    "FieldIssue",
    "LimitsSpec",
    "MetricSpec",
    "ModelSpec",
    "ModelsSpec",
    "OptimizerSpec",
    "PriceSpec",
    "PromptProgramSpec",
    "PythonProgramSpec",
    "RacingSpec",
    "SplitSpec",
    "TaskSpec",
    "task_schema",
    "template_fields",
]

METRIC_KINDS = ("contains", "exact", "f1", "judge", "numeric", "python", "regex")
# Metric kinds that compare against data.target, and the one option each kind owns.
_NEEDS_TARGET = frozenset({"contains", "exact", "f1", "numeric", "regex"})
_OPTION_OWNER = dict(pattern="regex", tolerance="numeric", function="python", rubric="judge")
# Tags of the program union; they show up in pydantic error locations and the loader drops them.
PROGRAM_TAGS = frozenset({"prompt program", "python program"})

_REF_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".csv": "csv"}


def _check_ref(value: str) -> str:
    if not _REF_RE.match(value):
        raise ValueError(f"expected 'module.path:function', got {value!r}")
    return value


class ExemplarSpec(Frozen):
    """One seed demonstration: input fields and the answer."""

    inputs: dict[str, Any] = Field(description="Input values keyed by placeholder name.")
    output: str = Field(description="The answer the program should give for these inputs.")


class PromptProgramSpec(Frozen):
    """A single-call prompt program: system text, a user template, exemplars."""

    system: str = Field("", description="System prompt; a trainable text parameter (may be empty).")
    user: str = Field(description="User template; each {placeholder} must be in data.inputs.")
    exemplars: tuple[ExemplarSpec, ...] = Field((), description="Seed exemplars, shown first.")
    trainable: tuple[Literal["system", "user", "exemplars"], ...] = Field(
        ("system", "exemplars"), description="Parameters optimizers may edit."
    )
    choices: tuple[str, ...] = Field((), description="If given, the answer must be one of these.")
    max_tokens: int = Field(64, gt=0, description="Most tokens generated per answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    stop: tuple[str, ...] = Field((), description="Stop strings.")

    @field_validator("user")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        template_fields(value)
        return value

    @field_validator("trainable")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a parameter twice: {list(value)!r}")
        return value

    @property
    def placeholders(self) -> tuple[str, ...]:
        return template_fields(self.user)


class PythonProgramSpec(Frozen):
    """A program written in Python: an importable function and its trainable parameters."""

    entry: str = Field(
        description="'module.path:function'; the task file's folder is put on sys.path first.",
    )
    params: dict[str, str | list[Any]] = Field(
        default_factory=dict, description="Seed values of the program's trainable parameters."
    )

    @field_validator("entry")
    @classmethod
    def _entry_ref(cls, value: str) -> str:
        return _check_ref(value)


def _program_tag(value: Any) -> str:
    python = isinstance(value, PythonProgramSpec) or (isinstance(value, dict) and "entry" in value)
    return "python program" if python else "prompt program"


ProgramSpec = Annotated[
    Annotated[PromptProgramSpec, Tag("prompt program")]
    | Annotated[PythonProgramSpec, Tag("python program")],
    Discriminator(_program_tag),
]


class SplitSpec(Frozen):
    """Split sizes taken, in this order, from one seeded shuffle of data.path."""

    train: int = Field(0, ge=0, description="Rows for training (exemplar pool, feedback).")
    val: int = Field(0, ge=0, description="Rows for selecting candidates.")
    test: int = Field(0, ge=0, description="Rows held out for the final report.")
    seed: int | None = Field(None, description="Shuffle seed; defaults to the task's seed.")

    @model_validator(mode="after")
    def _not_empty(self) -> SplitSpec:
        if self.total == 0:
            raise ValueError("train, val and test are all 0; give at least one split a size")
        return self

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


class LimitsSpec(Frozen):
    """At most this many rows, taken from the top of each explicit split file."""

    train: int | None = Field(None, ge=0)
    val: int | None = Field(None, ge=0)
    test: int | None = Field(None, ge=0)


class DataSpec(Frozen):
    """Where the examples come from and which columns they use.

    Either ``path`` with ``split``, or explicit ``train``/``val``/``test`` files with
    optional ``limits``. Paths are relative to the task file's folder.
    """

    path: str | None = Field(None, description="One .jsonl or .csv file, split by `split`.")
    format: Literal["jsonl", "csv"] | None = Field(None, description="Defaults to the file suffix.")
    inputs: list[str] | dict[str, str] = Field(
        description="Input fields: a list of column names, or {placeholder: column}."
    )
    target: str | None = Field(None, description="Gold answer column (judge/python: optional).")
    split: SplitSpec | None = Field(None, description="Split sizes for `path`.")
    train: str | None = Field(None, description="Explicit training file.")
    val: str | None = Field(None, description="Explicit validation file.")
    test: str | None = Field(None, description="Explicit test file.")
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="Explicit files' row limits."
    )

    @field_validator("inputs")
    @classmethod
    def _inputs_named(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(value)
        if not names:
            raise ValueError("list at least one input field")
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"input name {name!r} must be an identifier (letters, digits, _)")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"lists a field twice: {value!r}")
        return value

    @model_validator(mode="after")
    def _one_layout(self) -> DataSpec:
        explicit = [name for name in ("train", "val", "test") if getattr(self, name) is not None]
        if self.path is not None:
            if explicit:
                raise FieldIssue(explicit[0], "cannot be combined with data.path; use one")
            if self.split is None:
                raise FieldIssue("split", "required with data.path, e.g. {train: 20, val: 30}")
            if self.limits != LimitsSpec():
                raise FieldIssue("limits", "only applies to explicit train/val/test files")
        else:
            if not explicit:
                raise FieldIssue("path", "give data.path (with split) or train/val/test files")
            if self.split is not None:
                raise FieldIssue("split", "only applies to data.path, not to explicit files")
        for field, file in self.files().items():
            if self.format is None and Path(file).suffix.lower() not in _FORMAT_BY_SUFFIX:
                reason = f"cannot infer the format of {file!r}; use .jsonl or .csv, or data.format"
                raise FieldIssue(field, reason)
        return self

    def files(self) -> dict[str, str]:
        """The data files as written, keyed by field (``path``, ``train``, ``val``, ``test``)."""
        names = ("path", "train", "val", "test")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def format_of(self, file: str) -> str:
        return self.format or _FORMAT_BY_SUFFIX[Path(file).suffix.lower()]

    @property
    def input_map(self) -> dict[str, str]:
        """``{placeholder: column}``; a list of inputs maps each name to itself."""
        if isinstance(self.inputs, dict):
            return dict(self.inputs)
        return {name: name for name in self.inputs}


class MetricSpec(Frozen):
    """How an answer is scored against its example; options apply to the kinds named."""

    kind: Literal["exact", "contains", "regex", "numeric", "f1", "python", "judge"] = Field(
        description="exact | contains | regex | numeric | f1 | python | judge"
    )
    normalize: bool = Field(
        True, description="exact/contains/regex: lower-case, strip punctuation."
    )
    pattern: str | None = Field(None, description="regex: group 1 (or the match) is the answer.")
    tolerance: float | None = Field(None, ge=0, description="numeric: absolute tolerance (1e-6).")
    function: str | None = Field(
        None, description="python: 'module:function(prediction, example)'."
    )
    rubric: str | None = Field(None, description="judge: what a correct answer looks like.")

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in METRIC_KINDS:
            raise ValueError(f"unknown metric {value!r}; expected one of {', '.join(METRIC_KINDS)}")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return check_regex(value)

    @field_validator("function")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else _check_ref(value)

    @model_validator(mode="after")
    def _options_fit_kind(self) -> MetricSpec:
        for option, owner in _OPTION_OWNER.items():
            if getattr(self, option) is not None and self.kind != owner:
                raise FieldIssue(option, f"only used by metric kind {owner!r}, not {self.kind!r}")
        if self.kind == "regex" and self.pattern is None:
            raise FieldIssue("pattern", "required for metric kind 'regex'")
        if self.kind == "python" and self.function is None:
            raise FieldIssue("function", "required for metric kind 'python'")
        return self

    @property
    def needs_target(self) -> bool:
        return self.kind in _NEEDS_TARGET


class TaskSpec(Frozen):
    """A task file (task.yaml): the program, its data and metric, and how to optimize it."""

    name: str = Field(
        description="Task name: lower-case letters, digits, _ and -.",
        json_schema_extra={"pattern": NAME_RE.pattern},
    )
    description: str = Field("", description="Free text.")
    seed: int = Field(0, description="Global seed for shuffles and optimizers.")
    program: ProgramSpec = Field(description="A prompt program (system/user) or a Python `entry`.")
    data: DataSpec
    metric: MetricSpec | None = Field(
        None,
        description="How answers are scored. Only an optimizer that selects by a pairwise "
        "judge (spo) runs without one; then the test split is not scored.",
    )
    feedback: tuple[FeedbackRuleSpec, ...] = Field(
        (), description="Feedback rules: error types of failing examples and their messages."
    )
    models: ModelsSpec = Field(default_factory=ModelsSpec)
    optimizer: OptimizerStages = Field(
        default_factory=OptimizerSpec,
        description="An optimizer (a name or {name, config}), or a list of them: stages run in "
        "order in one run and one budget, each starting from the previous stage's best.",
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    racing: RacingSpec = Field(default_factory=RacingSpec)
    concurrency: int | None = Field(
        None,
        ge=1,
        description="Examples evaluated at once; default: the task model's max_concurrency "
        "(8; vllm: 256).",
    )
    sandbox: SandboxSpec = Field(default_factory=SandboxSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    prices: dict[str, PriceSpec] = Field(default_factory=dict, description="By 'provider:model'.")
    output: str = Field("traces", description="Run folder root, relative to the current directory.")

    _path: Path | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"use only lower-case letters, digits, _ and -, got {value!r}")
        return value

    @field_validator("prices")
    @classmethod
    def _price_keys(cls, value: dict[str, PriceSpec]) -> dict[str, PriceSpec]:
        return {check_model_string(key): price for key, price in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        inputs = self.data.input_map
        known = f"data.inputs ({', '.join(inputs)})"
        if isinstance(self.program, PromptProgramSpec):
            for name in self.program.placeholders:
                if name not in inputs:
                    raise FieldIssue("program.user", f"placeholder {{{name}}} is not in {known}")
            for i, exemplar in enumerate(self.program.exemplars):
                for name in set(exemplar.inputs) - set(inputs):
                    raise FieldIssue(
                        f"program.exemplars[{i}].inputs", f"{name!r} is not in {known}"
                    )
        names = [rule.name for rule in self.feedback]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldIssue(f"feedback[{i}].name", f"rule {name!r} is declared twice")
        if self.metric is not None and self.metric.needs_target and self.data.target is None:
            raise FieldIssue("data.target", f"required by metric kind {self.metric.kind!r}")
        self._check_shares()
        return self

    def _check_shares(self) -> None:
        shares = [(i, stage.share) for i, stage in enumerate(self.stages) if stage.share]
        if not shares:
            return
        where = f"optimizer[{shares[0][0]}].share" if len(self.stages) > 1 else "optimizer.share"
        if self.budget.max_calls is None:
            raise FieldIssue(where, "a stage's share is of budget.max_calls, which is not set")
        if sum(share for _, share in shares) > 1 + 1e-9:
            raise FieldIssue(where, f"the stages' shares add up to "
                                    f"{sum(s for _, s in shares):g}, more than 1")  # fmt: skip

    @property
    def stages(self) -> tuple[OptimizerSpec, ...]:
        """The optimizers in the order they run (one, unless ``optimizer`` is a list)."""
        return self.optimizer if isinstance(self.optimizer, tuple) else (self.optimizer,)

    @property
    def path(self) -> Path | None:
        """The resolved task file this spec was loaded from (None if built in code)."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """Folder that relative data paths and Python entries resolve against."""
        return self._path.parent if self._path is not None else Path.cwd()

    def located_at(self, path: str | Path) -> TaskSpec:
        """A copy that remembers ``path`` as its task file."""
        copy = self.model_copy()
        copy._path = Path(path).resolve()
        return copy


def task_schema(*, own: bool = False) -> dict[str, Any]:
    """The JSON schema of task files (what ``promptopt schema`` prints), for editor completion.

    The installed plugins are listed in it: the registered optimizers as the
    ``examples`` of an optimizer's ``name``, the registered providers in the
    description of a model string, so a plugin's names complete like promptopt's;
    ``own`` lists promptopt's own only (the shipped ``task.schema.json``).
    """
    schema = TaskSpec.model_json_schema()
    defs = schema["$defs"]
    defs["OptimizerSpec"]["properties"]["name"]["examples"] = plugins.optimizers.available(own=own)
    listed = f" Registered providers: {', '.join(plugins.providers.available(own=own))}."
    as_string, as_object = defs["ModelSpec"]["anyOf"]
    as_string["description"] += listed
    as_object["properties"]["model"]["description"] += listed
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
