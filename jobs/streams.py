"""Cutting an engine's byte stream into lines.

Progress bars redraw with a bare ``\\r`` and tqdm writes to stderr, so a line ends at ``\\n``, ``\\r`` or
``\\r\\n``; every redraw becomes its own line, which is what the parsers want.

A redraw has no terminator of its own until the next one arrives (tqdm writes ``\\r<bar>``), which would
hold every bar back by a whole redraw interval. So a pending line that began after a ``\\r`` and already
ends like a complete tqdm bar (``| n/total [… ]``) is sent at once; the terminator that later closes it
ends nothing new.
"""

import re
import time
from collections.abc import Callable

_TERMINATOR = re.compile(rb"\r\n|\r|\n")
# How a tqdm bar ends: "45%|████▌     | 3600/7999 [12:34<15:20,  4.78it/s, Loss=0.01]" (its postfix holds
# no "]"), or without the "|…|" body where bar_format leaves it out: SyncTalk's "100% 550/550 [00:20<00:00,
# 27.20it/s]" (nerf_triplane/utils.py:1056 test, :1282 training).
_BAR_END = rb"\d+%(?:\|[^|]*\|)?\s*\d+/\d+\s*\[[^\]\[]*\]"
_COMPLETE_BAR = re.compile(_BAR_END + rb"\s*$")
_GLUED_BAR = re.compile(rb"^.*?" + _BAR_END)


class LineSplitter:
    def __init__(self, max_line: int = 4000):
        self._pending = b""
        self._max_line = max_line
        self._skip_lf = False  # the previous read ended with \r: a \n starting this one is its pair
        self._redraw = False  # the pending line began right after a \r
        self._sent_early = False  # the pending line was already sent; its terminator is still to come

    def feed(self, data: bytes) -> list[str]:
        buffer = self._pending + data
        start = 0
        if self._sent_early and buffer:
            self._sent_early = False
            first = _TERMINATOR.match(buffer)
            if first is not None:
                start = first.end()
                self._redraw = first.group() == b"\r"
                self._skip_lf = self._redraw and start == len(buffer)
        elif self._skip_lf and buffer[:1] == b"\n":
            start, self._redraw = 1, False
        if start == 0 or not self._skip_lf:
            self._skip_lf = False
        lines: list[str] = []
        for match in _TERMINATOR.finditer(buffer, start):
            lines.extend(self._redraw_pieces(buffer[start : match.start()]))
            start = match.end()
            self._redraw = match.group() == b"\r"
            self._skip_lf = self._redraw and start == len(buffer)
        rest = buffer[start:]
        while len(rest) > self._max_line:
            cut = self._boundary(rest)
            lines.append(rest[:cut].decode("utf-8", "replace"))
            rest = rest[cut:]
        if self._redraw and _COMPLETE_BAR.search(rest):
            lines.extend(self._pieces(rest))
            rest, self._sent_early = b"", True
        self._pending = rest
        return lines

    def close(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return self._redraw_pieces(rest) if rest else []

    def _redraw_pieces(self, raw: bytes) -> list[str]:
        """A line that began after a ``\\r`` and holds text after a complete bar is two lines: a bar never
        closed (SyncTalk's Trainer.test, nerf_triplane/utils.py:1056–1103) or a print while a bar is open
        (GaussianTalker train.py:180) writes its text right after the last redraw, with no line ending."""
        if self._redraw and (bar := _GLUED_BAR.match(raw)) and raw[bar.end() :].strip():
            return self._pieces(raw[: bar.end()]) + self._pieces(raw[bar.end() :])
        return self._pieces(raw)

    def _boundary(self, raw: bytes) -> int:
        """Where to cut ``raw`` at most ``max_line`` bytes in, without splitting a UTF-8 character."""
        cut = self._max_line
        while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # a continuation byte: back up to the lead byte
            cut -= 1
        return cut or self._max_line

    def _pieces(self, raw: bytes) -> list[str]:
        """One line, cut into pieces of at most ``max_line`` bytes (the log keeps every byte)."""
        pieces = []
        while len(raw) > self._max_line:
            cut = self._boundary(raw)
            pieces.append(raw[:cut].decode("utf-8", "replace"))
            raw = raw[cut:]
        pieces.append(raw.decode("utf-8", "replace"))
        return pieces


def follow(
    process,
    on_lines: Callable[[list[str]], None],
    *,
    max_line: int,
    poll: float,
    drain_seconds: float,
    should_stop: Callable[[], bool] | None = None,
    on_idle: Callable[[], None] | None = None,
) -> int | None:
    """Read a node process's output (``gpu_nodes.connections.RunningProcess``) until it ends, handing its
    lines to ``on_lines`` as they come; returns its exit code. ``poll``: how long one read waits;
    ``on_idle()`` runs after a read that brought nothing. A child that outlives the process can hold the
    pipe open: ``drain_seconds`` after the process exited, reading stops. ``should_stop()`` is asked before
    every read: when it turns true, reading stops at once and None is returned (the caller stops the
    process)."""
    splitter = LineSplitter(max_line)
    exited_at = None
    while True:
        if should_stop is not None and should_stop():
            return None
        data = process.read(poll)
        if data:
            on_lines(splitter.feed(data))
            continue
        if data == b"":
            break
        if on_idle is not None:
            on_idle()
        if exited_at is None and process.wait(0) is not None:
            exited_at = time.monotonic()
        elif exited_at is not None and time.monotonic() - exited_at > drain_seconds:
            break
    on_lines(splitter.close())
    return process.wait()
