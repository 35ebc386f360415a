"""One example's run: what a program answered, how it scored, and why it failed.

The task layer produces these (a program run on an example, then the metric);
the engine gathers them into an ``Evaluated`` candidate and the optimizers read
them. Feedback rules (:mod:`.feedback`) classify the failing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptopt.graph import Trace
    from promptopt.task.data import Example
    from promptopt.task.metrics import Score

__all__ = ["ExampleResult"]


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example's run: the output (or error), its score and, for traced programs, the trace.

    The engine attaches the score's feedback to the trace's output node, so
    ``graph.backward``-style views of it show an optimizer why the output was wrong.
    ``request_key`` is the key of the one task-model request the output came from,
    when the program made exactly one.
    ``rule`` names the task's first feedback rule (``feedback:`` in task.yaml) that
    this failing example matched: its error type.
    """

    example: Example
    output: str | None
    score: Score
    error: str | None = None
    trace: Trace | None = field(default=None, compare=False, repr=False)
    request_key: str | None = field(default=None, compare=False, repr=False)
    rule: str | None = None

    @property
    def failed(self) -> bool:
        """The program raised, the output was unreadable, or it scored below full marks."""
        return self.error is not None or not self.score.valid or self.score.value < 1.0
