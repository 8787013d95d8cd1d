"""Reading engine consoles into stages, progress, ETA and metrics.

Formats (from shared/spec/engines.md §3):
- stage banners ``[INFO] ===== extract audio from … =====``;
- tqdm bars ``Training progress:  45%|…| 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.0123, psnr=31.52]``;
- GaussianTalker's ``safe_state`` suffix `` [dd/mm HH:MM:SS]`` on stdout lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BANNER = re.compile(r"^\[INFO\] =====\s*(?P<text>.*?)\s*=====")
TIMESTAMP_SUFFIX = re.compile(r" \[\d\d/\d\d \d\d:\d\d:\d\d\]$")
BAR = re.compile(
    r"^(?:(?P<desc>[^|]*?):\s*)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rate>[^,\]]*))?(?:,\s*(?P<postfix>[^\]]*))?\]"
)
POSTFIX_ITEM = re.compile(r"(?P<key>[A-Za-z_][\w ()]*?)=(?P<value>-?[\d.]+(?:e-?\d+)?|nan|inf)")


def strip_timestamp(line: str) -> str:
    return TIMESTAMP_SUFFIX.sub("", line)


def clock_seconds(text: str) -> float | None:
    """tqdm's ``[HH:]MM:SS`` → seconds; ``?`` → None."""
    if not text or "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


@dataclass(frozen=True)
class Bar:
    desc: str
    n: int
    total: int
    remaining_seconds: float | None
    postfix: dict[str, float]


def parse_bar(line: str) -> Bar | None:
    match = BAR.search(line)
    if match is None:
        return None
    postfix = {}
    for item in POSTFIX_ITEM.finditer(match["postfix"] or ""):
        postfix[item["key"].strip()] = float(item["value"])
    return Bar(
        desc=(match["desc"] or "").strip(),
        n=int(match["n"]),
        total=int(match["total"]),
        remaining_seconds=clock_seconds(match["remaining"]),
        postfix=postfix,
    )


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


class EvaluateParser(ConsoleParser):
    """Our ``evaluate.py`` (quality figures on the node): ``[INFO] ===== evaluate N frames =====``, an
    ``Evaluating`` bar with ``psnr``/``ssim`` running means, ``[ERROR] …`` naming what is wrong."""

    def __init__(self) -> None:
        self.error: str | None = None

    def feed(self, line: str) -> Update | None:
        line = line.strip()
        if line.startswith("[ERROR] "):
            self.error = line.removeprefix("[ERROR] ")
            return Update(event={"error": self.error})
        if BANNER.match(line):
            return Update(stage="evaluate", progress=0.0)
        if (bar := parse_bar(line)) is not None and bar.desc == "Evaluating":
            metrics = {key: value for key, value in bar.postfix.items() if key in ("psnr", "ssim")}
            return Update(
                stage="evaluate",
                progress=bar.n / bar.total if bar.total else 1.0,
                eta_seconds=bar.remaining_seconds,
                metrics=metrics,
            )
        return None

    def outcome(self, returncode: int) -> str | None:
        if returncode != 0:
            return self.error or super().outcome(returncode)
        return None
