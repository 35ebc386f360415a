"""The ``models:`` of a task file: :class:`ModelSpec` (one endpoint) and :class:`ModelsSpec`
(the model of each role).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from promptopt.errors import ConfigError
from promptopt.llm.models import DEFAULT_MODEL, ModelConfig, parse_model
from promptopt.task.frozen import Frozen

__all__ = ["ModelSpec", "ModelsSpec", "check_model_string"]

_MODEL_RE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_-]*:\S.*$")


def check_model_string(value: str) -> str:
    if not value.strip():
        raise ValueError("expected 'provider:model' such as 'openai:gpt-4o-mini', got ''")
    try:
        return str(parse_model(value))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class ModelSpec(ModelConfig):
    """One model endpoint; a bare ``"provider:model"`` string is short for ``{model: ...}``.

    The fields (and their schema descriptions) are :class:`promptopt.llm.models.ModelConfig`'s,
    frozen and closed to unknown keys as every task-file model; the string is checked by
    ``parse_model``.
    """

    @field_validator("model")
    @classmethod
    def _valid_model(cls, value: str) -> str:  # the task file's message for an empty string
        return check_model_string(value)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"model": check_model_string(value)} if isinstance(value, str) else value

    @property
    def provider(self) -> str:
        return self.model.partition(":")[0]

    def to_config(self) -> ModelConfig:
        """This model as the LLM layer's plain :class:`~promptopt.llm.models.ModelConfig`."""
        return ModelConfig.model_validate(self.model_dump())

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        as_object = dict(schema)
        schema.clear()
        schema["anyOf"] = [
            {"type": "string", "pattern": _MODEL_RE.pattern, "description": "'provider:model'."},
            as_object,
        ]
        return schema


class ModelsSpec(Frozen):
    """The models of a run, by role."""

    task: ModelSpec = Field(
        default_factory=lambda: ModelSpec(model=DEFAULT_MODEL),
        description="Runs the program being optimized.",
    )
    optimizer: ModelSpec | None = Field(None, description="Proposes edits; defaults to `task`.")
    judge: ModelSpec | None = Field(None, description="Grades for metric 'judge'; or `optimizer`.")

    def for_role(self, role: Literal["task", "optimizer", "judge"]) -> ModelSpec:
        """The model of a role, with the defaults applied (judge -> optimizer -> task)."""
        optimizer = self.optimizer or self.task
        return {"task": self.task, "optimizer": optimizer, "judge": self.judge or optimizer}[role]
