"""A one-line progress display for long MCMC runs, written to stderr, with no dependencies.

The line shows the phase (warmup or sampling), iterations done of the total, divergent
transitions in the current phase and the iteration rate, and is redrawn in place (``\\r``) at
most every ``min_interval`` seconds (and on the last iteration), so a fast sampler does not
spend its time printing. :func:`progress_enabled` resolves the runner's ``progress_bar``
option: ``None`` shows it only when the stream is a terminal.

>>> import io
>>> stream = io.StringIO()
>>> line = ProgressLine(4, num_warmup=2, stream=stream, min_interval=0.0)
>>> for _ in range(4):
...     line.update()
>>> line.close()
>>> stream.getvalue().split("\\r")[-1].split()[:3]
['sampling', '4/4', '100%']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressLine", "progress_enabled"]


def progress_enabled(option: bool | None, stream: TextIO | None = None) -> bool:
    """``True``/``False`` force the display on or off; ``None`` turns it on only when
    ``stream`` (default stderr) is a terminal, so logs and captured output stay clean."""
    if option is not None:
        return bool(option)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressLine:
    """Progress of ``total`` iterations, the first ``num_warmup`` of them warmup.

    ``update(events)`` after each iteration, with the number of events it had (divergent
    transitions; any int-like, e.g. a 0-dim tensor: it is only converted when the line is drawn);
    ``close()`` at the end ends the line. ``label`` prefixes the line (e.g. ``"chain 2/4"``);
    ``phase`` names the iterations after warmup and ``counter`` what ``update`` counts (a
    particle filter shows ``"filtering"`` and ``"resampled"``); ``clock`` is injectable for
    tests.
    """

    def __init__(
        self,
        total: int,
        num_warmup: int = 0,
        *,
        stream: TextIO | None = None,
        label: str = "",
        phase: str = "sampling",
        counter: str = "divergent",
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.num_warmup, self.label = total, num_warmup, label
        self.phase, self.counter = phase, counter
        self.stream = sys.stderr if stream is None else stream
        self.min_interval, self.clock = min_interval, clock
        self.done = self.drawn = 0  # iterations counted, and shown on screen
        self.counted: object = 0  # in the current phase
        self.start = self.last_draw = clock()
        self.width = 0  # of the line on screen, to blank out leftovers

    def update(self, events: object = 0) -> None:
        """Count one iteration and the ``events`` it had (divergent transitions, or whether
        the particles were resampled); redraw if due."""
        self.done += 1
        if self.done == self.num_warmup + 1:
            self.counted = 0  # sampling starts: count afresh
        self.counted = self.counted + events
        now = self.clock()
        if now - self.last_draw >= self.min_interval or self.done == self.total:
            self.draw(now)

    def render(self, now: float) -> str:
        """The line's text at time ``now``."""
        phase = "warmup" if self.done <= self.num_warmup and self.num_warmup else self.phase
        elapsed = now - self.start
        rate = f"{self.done / elapsed:.1f} it/s" if elapsed > 0 else "- it/s"
        percent = 100 * self.done // max(self.total, 1)
        digits = len(str(self.total))
        prefix = f"{self.label}: " if self.label else ""
        return (f"{prefix}{phase:<8} {self.done:>{digits}}/{self.total} {percent:>3}%  "
                f"{self.counter} {int(self.counted)}  {rate}")  # type: ignore[call-overload]

    def draw(self, now: float) -> None:
        """Redraw the line in place, blanking what is left of a longer previous one."""
        text = self.render(now)
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width, self.drawn, self.last_draw = len(text), self.done, now

    def close(self) -> None:
        """Show the final count if it is not on screen yet, and end the line."""
        if self.drawn != self.done or not self.width:
            self.draw(self.clock())
        self.stream.write("\n")
        self.stream.flush()
