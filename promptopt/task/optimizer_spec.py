"""The ``optimizer:`` of a task file: one :class:`OptimizerSpec`, or a list of them run as
stages (:data:`OptimizerStages`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Field, Tag

from promptopt.task.frozen import FieldIssue, Frozen

__all__ = ["OPTIMIZER_TAGS", "OptimizerSpec", "OptimizerStages"]

# Tags of the `optimizer` union; they show up in pydantic error locations and the loader drops them.
OPTIMIZER_TAGS = frozenset({"one optimizer", "optimizer stages"})


class OptimizerSpec(Frozen):
    """Which registered optimizer runs, and its configuration."""

    name: str = Field(
        "exemplars",
        description="A registered optimizer (`promptopt schema` lists those installed).",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Checked by its Config.")
    share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="A stage's share of budget.max_calls left after the seed (0 to 1); stages "
        "without one split the rest in proportion to their optimizers' estimates. What a stage "
        "leaves unspent passes to the next.",
    )


def _named(value: Any) -> Any:
    """An optimizer given by its name alone (``mcts``) is that optimizer with its default config."""
    return {"name": value} if isinstance(value, str) else value


def _stage(value: Any) -> Any:
    """One stage of a list: a name, or a mapping that names its optimizer."""
    if isinstance(value, dict) and set(value) <= {
        "config",
        "share",
    }:  # other keys: reported as unknown
        raise FieldIssue("name", "a stage names its optimizer")
    if not isinstance(value, str | dict | OptimizerSpec):
        raise ValueError(f"expected an optimizer name or {{name, config}}, got {value!r:.60}")
    return _named(value)


def _some_stages(value: Any) -> Any:
    if isinstance(value, list | tuple) and not value:
        raise ValueError("list at least one optimizer")
    return value


def _optimizer_tag(value: Any) -> str:
    return "optimizer stages" if isinstance(value, list | tuple) else "one optimizer"


_AS_WRITTEN = str | OptimizerSpec  # what the schema offers editors for one optimizer
# One optimizer, or stages run in order in one run and one budget (each starts from the
# previous stage's best candidate).
OptimizerStages = Annotated[
    Annotated[OptimizerSpec, BeforeValidator(_named, json_schema_input_type=_AS_WRITTEN),
              Tag("one optimizer")]
    | Annotated[
        tuple[Annotated[OptimizerSpec,
                        BeforeValidator(_stage, json_schema_input_type=_AS_WRITTEN)], ...],
        BeforeValidator(_some_stages, json_schema_input_type=list[_AS_WRITTEN]),
        Tag("optimizer stages"),
    ],
    Discriminator(_optimizer_tag),
]  # fmt: skip
