"""Progress display: one interface the pipeline reports to, and a terminal implementation."""

from __future__ import annotations

import sys


class Progress:
    """Progress display interface; the default shows nothing."""

    def begin(self, total: float, label: str) -> None: ...

    def stage(self, text: str) -> None: ...

    def advance(self, amount: float) -> None: ...

    def end(self) -> None: ...


class TerminalProgress(Progress):
    """A live line on a terminal (layer, units done/total, elapsed, ETA); silent when not a TTY."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None

    def begin(self, total, label):
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="unit", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc}: {n:.0f}/{total:.0f} units [{elapsed}<{remaining}]")

    def stage(self, text):
        if self._bar is not None:
            self._bar.set_description_str(text)

    def advance(self, amount):
        if self._bar is not None:
            self._bar.update(amount)

    def end(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
