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
                lines.append(self._decode(buffer[start:position]))
                start = position + 1
                self._after_cr = False
            elif byte == 0x0D:  # \r
                lines.append(self._decode(buffer[start:position]))
                start = position + 1
                self._after_cr = True
            else:
                self._after_cr = False
        self._pending = buffer[start:]
        if len(self._pending) > self._max_line:
            lines.append(self._decode(self._pending))
            self._pending = b""
        return lines

    def close(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [self._decode(rest)] if rest else []

    def _decode(self, raw: bytes) -> str:
        return raw[: self._max_line].decode("utf-8", "replace")


def split_lines(chunks: list[bytes]) -> Iterator[str]:
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.close()
