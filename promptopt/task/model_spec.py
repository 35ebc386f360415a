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


class ModelSpec(Frozen):
    """One model endpoint; a bare ``"provider:model"`` string is short for ``{model: ...}``.

    Same fields as :class:`promptopt.llm.models.ModelConfig` (see :meth:`to_config`),
    plus descriptions for the schema; the string is checked by ``parse_model``.
    """

    model: str = Field(description="'provider:model', e.g. 'openai:gpt-4o-mini'.")
    base_url: str | list[str] | None = Field(None, description="OpenAI-compatible endpoint(s).")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight per endpoint.")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    options: dict[str, Any] = Field(default_factory=dict, description="Provider-specific options.")

    @field_validator("model")
    @classmethod
    def _model_string(cls, value: str) -> str:
        return check_model_string(value)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"model": check_model_string(value)} if isinstance(value, str) else value

    @property
    def provider(self) -> str:
        return self.model.partition(":")[0]

    def to_config(self) -> ModelConfig:
        """The LLM layer's :class:`~promptopt.llm.models.ModelConfig` for this model."""
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
