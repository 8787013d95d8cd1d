"""GaussianTalker: console parsing for training (shared/spec/engines.md §1.5 and §3)."""

from __future__ import annotations

import math

from .console import BANNER, ConsoleParser, Update, parse_bar, strip_timestamp

COARSE_ITERATIONS = 7999  # what the shipped configs set; the fine stage defaults to 10000
FINE_ITERATIONS = 10000


class TrainParser(ConsoleParser):
    """``train.py`` runs a coarse stage, then a fine one, each with its own ``Training progress`` bar.

    Overall progress counts iterations across both stages. A NaN loss makes train.py re-execute itself
    from the coarse stage (``loss is nan, … reexecv program now.``), which resets progress."""

    def __init__(self, *, coarse_iterations: int = COARSE_ITERATIONS, iterations: int = FINE_ITERATIONS):
        self.coarse_total = coarse_iterations
        self.fine_total = iterations
        self.stage = "setup"
        self.last_n = 0
        self.coarse_done = False
        self.completed = False
        self.restarts = 0
        self.best_progress = 0.0

    def feed(self, line: str) -> Update | None:
        line = strip_timestamp(line.strip())
        if not line:
            return None
        if banner := BANNER.match(line):
            return Update(stage=banner["text"])
        if line.startswith("Training progress"):
            return self._bar(line)
        if line.startswith("[ITER ") and "Saving Gaussians" in line:
            iteration = int(line[6 : line.index("]")])
            return Update(event={"checkpoint": {"stage": self.stage, "iteration": iteration}})
        if "loss is nan" in line:
            self.restarts += 1
            self.stage, self.last_n, self.coarse_done = "coarse", 0, False
            self.best_progress = 0.0
            return Update(stage="coarse", progress=0.0, event={"restart": "NaN loss; the engine restarts"})
        if line.startswith("Training complete."):
            self.completed = True
            return Update(stage="complete", progress=1.0, eta_seconds=0.0)
        return None

    def _bar(self, line: str) -> Update | None:
        bar = parse_bar(line)
        if bar is None:
            return None
        if self.stage in ("setup",):
            self.stage = "coarse"
            self.coarse_total = bar.total
        elif self.stage == "coarse" and (
            bar.n < self.last_n or (self.coarse_done and bar.total != self.coarse_total)
        ):
            self.stage = "fine"
            self.fine_total = bar.total
        if self.stage == "coarse" and bar.n >= bar.total:
            self.coarse_done = True
        self.last_n = bar.n
        done = bar.n if self.stage == "coarse" else self.coarse_total + bar.n
        progress = min(1.0, done / max(1, self.coarse_total + self.fine_total))
        # A total learnt late (the config overrode --iterations) must not move the bar backwards.
        progress = self.best_progress = max(progress, self.best_progress)
        # nan/inf are not JSON: PostgreSQL jsonb and browsers reject them.
        metrics = {key.lower(): value for key, value in bar.postfix.items() if math.isfinite(value)}
        return Update(stage=self.stage, progress=progress, metrics=metrics)

    def outcome(self, returncode: int) -> str | None:
        if returncode != 0:
            return super().outcome(returncode)
        if not self.completed:
            return "train.py ended without printing 'Training complete.': the model is incomplete."
        return None
