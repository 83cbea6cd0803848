"""Reading a Replicate training's growing log: forward new lines, pick out step, progress and loss.

Trainers print tqdm bars, "step N/M" lines and "loss: x" in their own ways; the parser reads all of
them and reports progress only forwards, so a restarted bar never moves the job backwards.
"""
from __future__ import annotations

import re

from ...progress import Reporter

_STEP = re.compile(r"\bstep\s*[:=]?\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_TQDM = re.compile(r"(\d{1,3})%\|[^|]*\|\s*(?:(\d+)\s*/\s*(\d+))?")
_LOSS = re.compile(r"\bloss\s*[:=]\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", re.IGNORECASE)


class LogParser:
    """Forwards only new log lines and reads step, progress and loss out of them."""

    def __init__(self, reporter: Reporter, total_steps: int) -> None:
        self.reporter = reporter
        self.total = max(int(total_steps), 1)
        self.seen = 0  # characters of the (growing) logs already consumed
        self.step: int | None = None
        self.last_loss: float | None = None
        self.loss_step: int | None = -1  # a step's loss often shows on two lines; record it once
        self.best_fraction = 0.0

    def feed(self, logs: str, final: bool = False) -> None:
        if len(logs) < self.seen:  # logs were truncated or restarted: start over
            self.seen = 0
        fresh = logs[self.seen :]
        # Keep an unfinished last line for the next poll unless the run is over.
        end = len(fresh) if final else max(fresh.rfind("\n"), fresh.rfind("\r")) + 1
        self.seen += end
        for line in re.split(r"[\r\n]+", fresh[:end]):
            if line.strip():
                self._line(line.rstrip())

    def _line(self, line: str) -> None:
        self.reporter.log(line)
        fraction = None
        if m := _STEP.search(line):
            self.step, total = int(m.group(1)), int(m.group(2))
            fraction = self.step / max(total, 1)
        elif m := _TQDM.search(line):
            if m.group(2):
                self.step = int(m.group(2))
                fraction = self.step / max(int(m.group(3)), 1)
            else:
                fraction = int(m.group(1)) / 100
        if fraction is not None and fraction > self.best_fraction:
            self.best_fraction = min(fraction, 1.0)
            self.reporter.progress(self.best_fraction, f"step {self.step}" if self.step is not None else "")
        if (m := _LOSS.search(line)) and (self.step is None or self.step != self.loss_step):
            self.last_loss, self.loss_step = float(m.group(1)), self.step
            self.reporter.metric("loss", self.last_loss, self.step)

