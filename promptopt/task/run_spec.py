"""How a run executes, as task-file models: its budget, the response cache, the sandbox of
proposed code, and model prices.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from promptopt.task.frozen import Frozen

__all__ = ["BudgetSpec", "CacheSpec", "PriceSpec", "RacingSpec", "SandboxSpec"]


class BudgetSpec(Frozen):
    """Hard limits for the whole run (task, optimizer and judge calls together)."""

    max_calls: int | None = Field(None, ge=0, description="Most LLM calls.")
    max_tokens: int | None = Field(None, ge=0, description="Most tokens, prompt plus completion.")
    max_usd: float | None = Field(None, ge=0, description="Most US dollars.")


class RacingSpec(Frozen):
    """Racing: candidates scored on a growing prefix of the (shuffled, fixed) validation rows,
    dropped once a paired sign test says they are worse than the best so far."""

    enabled: bool = Field(
        True,
        description="Race the candidates of optimizers that allow it (opro, optoprime, promst, "
        "and exemplars when it does not calibrate); 'racing: off' scores every candidate on "
        "every validation row.",
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="A candidate is dropped once the one-sided sign test on the rows scored so "
        "far says, at this confidence, that it is worse than the best so far.",
    )
    min_rows: int = Field(
        5, ge=1, description="Validation rows scored between two tests of a racing candidate."
    )

    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class CacheSpec(Frozen):
    """The LLM response cache."""

    policy: Literal["off", "read", "readwrite", "refresh"] = Field(
        "readwrite", description="off | read | readwrite | refresh"
    )
    dir: str | None = Field(None, description="Cache folder; default is the user cache folder.")


class SandboxSpec(Frozen):
    """How proposed code of trainable nodes runs."""

    isolation: Literal["namespaces", "none"] = Field(
        "namespaces",
        description="'namespaces': bubblewrap namespaces + seccomp (the default; where they are "
        "missing, proposed code does not run); 'none': a plain child process that can read "
        "your files and the network (an explicit opt-out).",
    )
    timeout_s: float = Field(5.0, gt=0, le=3600, description="Seconds per call of proposed code.")
    memory_mb: int = Field(
        256,
        ge=32,
        le=65536,
        description="RAM per call, MiB: 1/8 for its files, the rest its address space.",
    )


class PriceSpec(Frozen):
    """USD per million tokens."""

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
