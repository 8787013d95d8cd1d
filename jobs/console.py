"""The runner's parsing contract: a parser is fed the engine's console line by line and answers with
``Update``s (stage, progress, ETA, metrics, events), then judges the run by its exit code. Each job kind's
plan carries one; the engines' own parsers (avatars/engines/) build on this base.

The base understands stage banners ``[INFO] ===== extract audio from … =====`` (GaussianTalker
data_utils/process.py:22), with GaussianTalker's ``safe_state`` suffix `` [dd/mm HH:MM:SS]``
(utils/general_utils.py:127) stripped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BANNER = re.compile(r"^\[INFO\] =====\s*(?P<text>.*?)\s*=====")  # GaussianTalker data_utils/process.py:22
TIMESTAMP_SUFFIX = re.compile(r" \[\d\d/\d\d \d\d:\d\d:\d\d\]$")  # utils/general_utils.py:127


def strip_timestamp(line: str) -> str:
    return TIMESTAMP_SUFFIX.sub("", line)


@dataclass
class Update:
    """What one console line changed. Fields left None did not change."""

    stage: str | None = None
    progress: float | None = None
    eta_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    event: dict | None = None  # something worth recording on its own (a checkpoint saved, a restart)

    def __bool__(self) -> bool:
        return any(
            v not in (None, {})
            for v in (self.stage, self.progress, self.eta_seconds, self.metrics, self.event)
        )


class ConsoleParser:
    """Base class: feed lines, read updates; decide at the end whether the run succeeded."""

    def feed(self, line: str) -> Update | None:
        """The update this line makes; the base class understands only stage banners."""
        if banner := BANNER.match(strip_timestamp(line.strip())):
            return Update(stage=banner["text"])
        return None

    def outcome(self, returncode: int) -> str | None:
        """None when the run succeeded, else the error to show the user."""
        if returncode != 0:
            return f"The engine exited with code {returncode}. The log's last lines say why."
        return None
