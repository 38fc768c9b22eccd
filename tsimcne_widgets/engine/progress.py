"""Training progress: a live bar on a terminal or in a notebook, complete lines in a log.

tqdm redraws its bar with a carriage return about ten times a second.  Where the output
is a file or a pipe (``make demo > log``, CI, ``nohup``) nothing interprets the carriage
returns, so a three-minute run left ~1,500 updates in one "line" of the log.  There,
:class:`LineProgress` prints a bounded number of whole lines instead.
"""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["progress_bar", "LineProgress"]


def progress_bar(total: int, initial: int = 0, desc: str = "t-SimCNE", unit: str = "step"):
    """A tqdm bar where the output can redraw it, else a :class:`LineProgress`."""
    from tqdm.auto import tqdm

    # A kernel's stderr is no TTY either, but the notebook bar is a widget, not \r text.
    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    if in_notebook or _is_terminal(sys.stderr):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit)
    return LineProgress(total, initial=initial, desc=desc, unit=unit)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """The part of tqdm's interface the trainer uses, printed as whole lines.

    A line is printed each time another tenth of the steps is done, when a new stage
    shows up in the postfix, and on :meth:`close`: at most ``10 + (stages - 1) + 1`` lines
    however long the run, even when ``total`` is changed (a time budget re-plans once).

    Parameters
    ----------
    total : int
        Steps planned; may be reassigned while running.
    initial : int, default 0
        Steps already done (a resumed run).
    desc, unit : str
        Line prefix and the name of a step.
    file : file-like, optional
        Default ``sys.stderr``, where tqdm writes too.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "t-SimCNE",
                 unit: str = "step", file: IO[str] | None = None) -> None:
        self.total = total
        self.n = initial
        self.desc, self.unit = desc, unit
        self._file = file
        self._postfix: dict[str, object] = {}
        self._started = time.perf_counter()
        self._initial = initial
        self._tenth = self._tenths_done()
        self._reported_n: int | None = None
        self._stage = None
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        tenth = self._tenths_done()
        if tenth > self._tenth:
            self._tenth = tenth
            self._print()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self._postfix = dict(values)
        stage = values.get("stage")
        if stage is not None and stage != self._stage:
            first = self._stage is None
            self._stage = stage
            if not first:
                self._print()

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed as milestones pass."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reported_n != self.n:
            self._print()

    def _tenths_done(self) -> int:
        if not self.total or self.total <= 0:
            return 0
        return min(10, self.n * 10 // self.total)

    def _print(self) -> None:
        elapsed = time.perf_counter() - self._started
        done = self.n - self._initial
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        parts.append(f"{elapsed:.0f} s")
        if 0 < done and self.n < (self.total or 0):
            parts.append(f"~{elapsed / done * (self.total - self.n):.0f} s left")
        parts += [f"{key} {value}" for key, value in self._postfix.items()]
        stream = self._file if self._file is not None else sys.stderr
        # Keep the order of a log that mixes stdout and stderr (stdout may be block-buffered).
        if stream is sys.stderr and sys.stdout is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        print(", ".join(parts), file=stream, flush=True)
        self._reported_n = self.n
