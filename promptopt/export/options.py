"""What an export of preference data is asked for (:class:`ExportOptions`) and what it did
(:class:`ExportReport`).

The options are validated once, here; the CLI and the Python API both build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LEVELS", "ExportOptions", "ExportReport"]

LEVELS = ("output", "node", "optimizer", "judge")


class ExportOptions(BaseModel):
    """How pairs are mined, filtered, split, ordered and written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Literal["output", "node", "optimizer", "judge", "all"] = Field(
        "all",
        description="Which pairs: a program's outputs, LLM nodes of traces, optimizer replies, "
        "outputs a pairwise judge preferred (SPO).",
    )
    format: Literal["trl", "kto", "listwise"] = Field(
        "trl", description="TRL preference pairs, unpaired KTO rows, or ranked lists per input."
    )
    margin: float = Field(
        0.5,
        gt=0,
        description="The chosen side scores at least this much above the rejected "
        "(not the judge level).",
    )
    min_confidence: float = Field(
        0.5,
        ge=0.5,
        le=1,
        description="Judge level: the chosen side won at least this share of the votes; a "
        "pair needs a strict majority anyway, so the default keeps every majority.",
    )
    max_per_input: int = Field(
        10,
        ge=0,
        description="Pairs (or KTO rows' pairs) kept per input, largest margins first; 0: all.",
    )
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of inputs written to the test file instead."
    )
    split_seed: int = Field(0, description="Which inputs go to the test file.")
    order: Literal["input", "curriculum"] = Field(
        "input", description="By input, or every pair by margin, largest first."
    )
    runs: tuple[str, ...] = Field((), description="Keep runs whose id matches one of these globs.")
    tasks: tuple[str, ...] = Field((), description="Keep runs of these task names.")
    models: tuple[str, ...] = Field(
        (), description="Keep responses of these models ('provider:model' or the model name)."
    )
    nodes: tuple[str, ...] = Field((), description="Keep node-level pairs of these nodes only.")
    min_score: float | None = Field(None, description="The chosen side scores at least this.")
    same_prompt: bool = Field(
        False, description="Keep only pairs whose two sides were sent the very same messages."
    )

    def levels(self) -> tuple[str, ...]:
        """The levels mined, in the order they are written for one input."""
        if self.nodes:  # a node filter leaves only node-level pairs
            return ("node",)
        return LEVELS if self.level == "all" else (self.level,)


@dataclass
class ExportReport:
    """Counts of one export: rows written per file and level, groups mined, what was left out."""

    train_path: str
    test_path: str | None
    runs: list[str]
    rows: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    by_level: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    groups: int = 0  # inputs (or meta-prompts) mined, counted once per level
    responses: int = 0
    unlinked: int = 0  # evaluations whose output came from no single recorded request

    @property
    def total(self) -> int:
        return self.rows["train"] + self.rows["test"]

    def lines(self) -> list[str]:
        """The report as a few lines a person can read (no data from the runs)."""
        out = [
            f"runs: {len(self.runs)}, groups mined: {self.groups}, responses read: {self.responses}",
            "rows: " + ", ".join(f"{level} {n}" for level, n in self.by_level.items()),
            f"wrote {self.rows['train']} rows to {self.train_path}",
        ]
        if self.test_path is not None:
            out.append(f"wrote {self.rows['test']} rows to {self.test_path}")
        if self.unlinked:
            out.append(
                f"{self.unlinked} evaluations name no single task request (workflows with "
                f"several calls, runs from before promptopt recorded it): no output-level pairs"
            )
        return out
