"""Cutting an engine's byte stream into lines.

Progress bars redraw with a bare ``\\r`` and tqdm writes to stderr, so a line ends at ``\\n``, ``\\r`` or
``\\r\\n``; every redraw becomes its own line, which is what the parsers want.
"""

from collections.abc import Iterator


class LineSplitter:
    def __init__(self, max_line: int = 4000):
        self._pending = b""
        self._max_line = max_line
        self._after_cr = False

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        buffer = self._pending + data
        start = 0
        for position, byte in enumerate(buffer):
            if byte == 0x0A:  # \n
                if self._after_cr and position == start:
                    # the \n of a \r\n pair: the line already ended at the \r
                    start = position + 1
                    self._after_cr = False
                    continue
                lines.extend(self._pieces(buffer[start:position]))
                start = position + 1
                self._after_cr = False
            elif byte == 0x0D:  # \r
                lines.extend(self._pieces(buffer[start:position]))
                start = position + 1
                self._after_cr = True
            else:
                self._after_cr = False
        self._pending = buffer[start:]
        while len(self._pending) > self._max_line:
            cut = self._boundary(self._pending)
            lines.append(self._pending[:cut].decode("utf-8", "replace"))
            self._pending = self._pending[cut:]
        return lines

    def close(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return self._pieces(rest) if rest else []

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


def split_lines(chunks: list[bytes]) -> Iterator[str]:
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.close()
