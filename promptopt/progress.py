"""Progress reporting for long work: a protocol, a silent default and a terminal one.

The engine reports through a :class:`Reporter`; the CLI passes a
:class:`ConsoleReporter` (a rich progress bar on a terminal, plain lines
otherwise), library callers get :class:`SilentReporter` unless they ask.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["ConsoleReporter", "Reporter", "SilentReporter"]


class Reporter(Protocol):
    def phase(self, name: str, total: int) -> None:
        """A new unit of work of ``total`` example evaluations begins."""

    def advance(self, n: int = 1) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class SilentReporter:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _rate(speed: float | None) -> str:
    """An evaluation rate as the bar shows it: evaluations (one model call each for a
    prompt program) per second over the last seconds, blank until there is one."""
    return "" if not speed else f"{speed:.1f} evals/s"


def _rate_column() -> Any:
    """A rich column with :func:`_rate` (built here: rich loads only for a live bar)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(_rate(task.speed))

    return RateColumn()


class ConsoleReporter:
    """A rich progress bar when the stream is a terminal; one line per phase and message otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self._console = Console(file=stream or sys.stderr)
        self._live = self._console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _rate_column(),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()

    def phase(self, name: str, total: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.update(self._task, visible=False)
            self._task = self._progress.add_task(name, total=total)
        else:
            self._console.print(f"{name}: {total} evaluations", highlight=False)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def message(self, text: str) -> None:
        self._console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
