"""Progress display: one interface the pipeline reports to, and a terminal implementation.

The pipeline reports *work* (image-steps: images optimized x steps x transform samples, what a
render costs), the renders done out of those planned, the stage it is in (model, kind of render,
layer) and notes a user should read (a site was written, where to open it).
"""

from __future__ import annotations

import sys


class Progress:
    """Progress display interface; the default shows nothing."""

    def begin(self, total: float, label: str) -> None:
        """Start a bar of ``total`` work units."""

    def stage(self, text: str) -> None:
        """What is being done now (model, kind of render, layer)."""

    def advance(self, amount: float) -> None:
        """``amount`` more work units are done."""

    def renders(self, done: int, total: int) -> None:
        """``done`` of the ``total`` planned renders are stored (cached ones included)."""

    def note(self, text: str) -> None:
        """A line the user should read now (it stays above the bar)."""

    def end(self) -> None:
        """The bar is finished."""


class TerminalProgress(Progress):
    """A live line on a terminal (stage, renders done/total, elapsed, ETA for the model's renders);
    the line only when stderr is a TTY, notes whenever ``enabled``."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self._bar = None
        self._stage = ""
        self._renders = ""

    def begin(self, total, label):
        if self.live:
            from tqdm import tqdm

            self._stage = label
            self._bar = tqdm(total=total, desc=label, file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc} [{elapsed}<{remaining}]")

    def _describe(self):
        if self._bar is not None:
            self._bar.set_description_str(f"{self._stage}{self._renders} {self._bar.n / max(self._bar.total, 1):4.0%}")

    def stage(self, text):
        self._stage = text
        self._describe()

    def advance(self, amount):
        if self._bar is not None:
            self._bar.update(amount)
            self._describe()

    def renders(self, done, total):
        self._renders = f": {done}/{total} renders"
        self._describe()

    def note(self, text):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def end(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
