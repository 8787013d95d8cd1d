"""Cut a reply into sentences while it streams in, so each can be spoken as soon as it is complete.

A sentence ends at ``.``, ``!``, ``?``, ``…`` (or ``...``), the Chinese/Japanese ``。！？``, or a
newline. A Latin full stop only ends a sentence when whitespace (or the end of the reply) follows, so
"3.14" and "example.com" stay whole, and not after a known abbreviation ("e.g.", "Dr.") or a single
letter ("J. Smith"). Pieces shorter than ``min_chars`` are joined to what follows: a one-word "Yes."
spoken and rendered on its own costs a whole TTS and render round for half a second of video.

The reply's first piece may end sooner, at a clause mark (``first_min_chars``): "Hello there," is spoken
while the LLM is still writing the rest of its sentence, and the person hears the avatar a few tokens
earlier. This is what stream2sentence calls a quick first fragment (KoljaB/stream2sentence README,
``quick_yield_single_sentence_fragment`` and ``minimum_first_fragment_length``, 10 by default there too).
A Latin ``,`` ``;`` ``:`` or dash counts only with whitespace after it ("1,000" and "12:30" stay whole);
the Chinese/Japanese ``，、；：`` wherever they stand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# Lower-case, without the final dot. Multi-dot ones ("e.g") are matched on their last word too.
ABBREVIATIONS = frozenset(
    {
        "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "eg", "ie",
        "cf", "approx", "no", "fig", "inc", "ltd", "co", "corp", "dept", "est", "jan", "feb", "mar", "apr",
        "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "a.m", "p.m",
    }
)  # fmt: skip
# Marks that end a sentence wherever they stand (no space follows them in Chinese or Japanese text).
CJK_ENDS = "。！？!?…"
CLOSERS = "\"'”’)]）」』"
DEFAULT_MIN_CHARS = 20
CLAUSE_MARKS = ",;:—–"
CJK_CLAUSE_MARKS = "，、；："

_WORD_BEFORE_DOT = re.compile(r"([\w.]+)$")


def _is_abbreviation(text_before_dot: str) -> bool:
    match = _WORD_BEFORE_DOT.search(text_before_dot)
    if not match:
        return False
    word = match.group(1).lower().lstrip(".")
    if word in ABBREVIATIONS:
        return True
    # A lone capital ("J. Smith") is an initial; a lone digit may end a list item ("step 1."), keep it.
    return len(word) == 1 and word.isalpha()


def _boundary(buffer: str, start: int, final: bool) -> int | None:
    """The index just past the first sentence end at or after ``start``, or None when there is none yet
    (or it cannot be told yet: a dot at the very end of the streamed text may be "3." of "3.14")."""
    i = start
    n = len(buffer)
    while i < n:
        char = buffer[i]
        if char == "\n":
            return i + 1
        if char in CJK_ENDS or char == ".":
            # Runs of marks ("?!", "...", "。」") stay with the sentence they end.
            end = i + 1
            while end < n and (buffer[end] in CJK_ENDS or buffer[end] == "." or buffer[end] in CLOSERS):
                end += 1
            if end == n and not final:
                return None  # more may follow the marks: wait for the next piece
            if char in CJK_ENDS and char not in "!?":
                return end
            after_ok = end == n or buffer[end].isspace()
            if char in "!?":
                if after_ok:
                    return end
            elif after_ok and not (end == i + 1 and _is_abbreviation(buffer[:i])):
                return end
            i = end
            continue
        i += 1
    return None


def _clause_end(buffer: str, min_chars: int) -> int | None:
    """The index just past the first clause mark with at least ``min_chars`` of text before it, or None."""
    for i, char in enumerate(buffer):
        latin = char in CLAUSE_MARKS and i + 1 < len(buffer) and buffer[i + 1].isspace()
        if (latin or char in CJK_CLAUSE_MARKS) and len(buffer[: i + 1].strip()) >= min_chars:
            return i + 1
    return None


class SentenceSplitter:
    """Feed streamed text with :meth:`feed`; it yields finished sentences. :meth:`flush` ends the reply.

    With ``first_min_chars``, the first piece also ends at the first clause mark that has that many
    characters before it, when that comes before the first sentence's end."""

    def __init__(self, *, min_chars: int = DEFAULT_MIN_CHARS, first_min_chars: int = 0):
        self.min_chars = min_chars
        self.first_min_chars = first_min_chars
        self._first = True  # nothing yielded yet
        self._buffer = ""
        self._scanned = 0  # no boundary before this index of the buffer

    def feed(self, text: str) -> Iterator[str]:
        self._buffer += text
        yield from self._cut(final=False)

    def flush(self) -> Iterator[str]:
        yield from self._cut(final=True)
        rest = self._buffer.strip()
        self._buffer, self._scanned = "", 0
        if rest:
            yield rest

    def _cut(self, *, final: bool) -> Iterator[str]:
        while True:
            end = _boundary(self._buffer, self._scanned, final)
            if self._first and self.first_min_chars:
                # Before the first long-enough sentence end (short ones before it are skipped below).
                clause = _clause_end(self._buffer, self.first_min_chars)
                if clause is not None and (end is None or clause < end):
                    yield self._take(clause)
                    continue
            if end is None:
                # Re-scan from a little before the end: a pending "." or "..." must be looked at again.
                self._scanned = max(0, len(self._buffer) - 4)
                return
            sentence = self._buffer[:end].strip()
            if len(sentence) < self.min_chars and not (final and end >= len(self._buffer.rstrip())):
                self._scanned = end  # too short: keep it, and look for the next end after it
                continue
            if sentence:
                yield self._take(end)
            else:
                self._buffer, self._scanned = self._buffer[end:].lstrip(), 0

    def _take(self, end: int) -> str:
        """The buffer's text up to ``end``, which leaves it."""
        piece = self._buffer[:end].strip()
        self._buffer = self._buffer[end:].lstrip()
        self._scanned = 0
        self._first = False
        return piece


def split_sentences(
    pieces: Iterable[str], *, min_chars: int = DEFAULT_MIN_CHARS, first_min_chars: int = 0
) -> Iterator[str]:
    """Sentences from streamed pieces of text, each yielded as soon as it is complete."""
    splitter = SentenceSplitter(min_chars=min_chars, first_min_chars=first_min_chars)
    for piece in pieces:
        yield from splitter.feed(piece)
    yield from splitter.flush()
