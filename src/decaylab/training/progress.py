"""The optional rich progress bar of :func:`~decaylab.training.fit`."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A rich progress bar that does nothing unless asked for and stdout is a terminal."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(file=sys.stdout)
        if not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("fit"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]}  val {task.fields[val]}  best {task.fields[best]}"
            ),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._bar.add_task(
            "fit", total=total, completed=start, loss="-", val="-", best="-"
        )
        self._bar.start()

    @property
    def active(self) -> bool:
        return self._bar is not None

    def update(self, step: int, **fields: Any) -> None:
        if self._bar is not None:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()}
            # rich's update(**fields) takes arbitrary extra fields; mypy matches them to its
            # named keyword parameters instead.
            self._bar.update(self._task, completed=step, **shown)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
