"""The progress line: what it shows, how often it redraws, when the runner turns it on."""

from __future__ import annotations

import io

import torch

from ppl.inference.mcmc import RWMH, sample
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled


class _Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Clock:
    """A clock that advances by ``tick`` seconds per reading."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def _frames(stream: io.StringIO) -> list[str]:
    return [f.rstrip() for f in stream.getvalue().split("\r") if f.strip()]


def test_line_shows_phase_counts_divergences_and_rate():
    stream = _Stream(tty=True)
    line = ProgressLine(6, num_warmup=3, stream=stream, min_interval=0.0, clock=_Clock(0.5))
    for divergent in (1, 0, 2, 0, torch.tensor(1), 0):
        line.update(divergent)
    line.close()
    frames = _frames(stream)
    assert len(frames) == 6 and stream.getvalue().endswith("\n")
    assert frames[2].split()[:3] == ["warmup", "3/6", "50%"]
    assert "divergent 3" in frames[2]  # warmup's own count
    assert frames[3].split()[:2] == ["sampling", "4/6"]
    assert "divergent 0" in frames[3]  # sampling counts afresh
    assert "divergent 1" in frames[-1] and "100%" in frames[-1]
    assert frames[-1].endswith("it/s")


def test_line_redraws_at_most_every_interval_and_always_at_the_end():
    stream = _Stream(tty=True)
    line = ProgressLine(1000, stream=stream, min_interval=0.1, clock=_Clock(0.001))
    for _ in range(1000):
        line.update()
    line.close()
    frames = _frames(stream)
    assert 9 <= len(frames) <= 11  # one second of iterations at 10 lines a second
    assert frames[-1].split()[1] == "1000/1000"


def test_close_shows_an_unfinished_count_and_blanks_longer_leftovers():
    stream = _Stream(tty=True)
    line = ProgressLine(100, stream=stream, label="chain 1/2", min_interval=60.0,
                        clock=_Clock(1.0))
    line.update(12345)
    line.close()
    assert _frames(stream)[-1].startswith("chain 1/2: sampling   1/100")
    line.width = 80  # a longer line was on screen: the redraw covers all of it
    line.draw(5.0)
    assert len(stream.getvalue().rsplit("\r", 1)[-1]) == 80


def test_enabled_resolves_auto_from_the_stream():
    assert progress_enabled(None, _Stream(tty=True))
    assert not progress_enabled(None, _Stream(tty=False))
    assert not progress_enabled(None, io.StringIO())
    assert progress_enabled(True, _Stream(tty=False))
    assert not progress_enabled(False, _Stream(tty=True))


def test_runner_shows_the_line_only_when_asked_or_on_a_terminal(gaussian5, capsys, monkeypatch):
    init = torch.zeros(2, 5, dtype=torch.float64)
    sample(RWMH(), gaussian5, init, 3, 3)
    assert capsys.readouterr().err == ""  # auto, and captured stderr is no terminal
    sample(RWMH(), gaussian5, init, 3, 3, progress_bar=True)
    assert "sampling 6/6 100%" in capsys.readouterr().err
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    sample(RWMH(), gaussian5, init, 3, 3, chain_method="sequential")
    err = capsys.readouterr().err
    assert "chain 1/2: sampling 6/6" in err and "chain 2/2: sampling 6/6" in err
    sample(RWMH(), gaussian5, init, 3, 3, progress_bar=False)
    assert capsys.readouterr().err == ""
