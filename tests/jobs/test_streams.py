"""jobs.streams.LineSplitter: an engine's byte stream cut into lines, however the bytes arrive."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from jobs.streams import LineSplitter, follow


def feed_all(chunks: list[bytes], max_line: int = 4000) -> list[str]:
    splitter = LineSplitter(max_line=max_line)
    lines: list[str] = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    return lines + splitter.close()


def every_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(data):
        size = rng.randint(1, 7)
        chunks.append(data[start : start + size])
        start += size
    return chunks


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"one\ntwo\n", ["one", "two"]),
        (b"one\rtwo\r", ["one", "two"]),
        (b"one\r\ntwo\r\n", ["one", "two"]),
        (b"one\n\ntwo\n", ["one", "", "two"]),
        (b"a\r\n\r\nb\n", ["a", "", "b"]),
    ],
    ids=["lf", "cr", "crlf", "empty-line-kept", "crlf-empty-line-kept"],
)
def test_line_endings_lf_cr_and_crlf_each_end_one_line(data, expected):
    assert feed_all([data]) == expected


def test_crlf_split_between_chunks_is_still_one_line_ending():
    splitter = LineSplitter()
    assert splitter.feed(b"first\r") == ["first"]
    # The \n that completes the \r\n pair arrives later: it must not make an empty line.
    assert splitter.feed(b"\nsecond\r") == ["second"]
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"third\n") == ["third"]
    assert splitter.close() == []


def test_cr_then_other_bytes_then_lf_ends_two_lines():
    # "\r" followed by text is a redraw, not half of a "\r\n": the later "\n" ends a second line.
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"b") == []
    assert splitter.feed(b"\n") == ["b"]


def test_text_without_line_ending_is_held_until_the_ending_arrives():
    splitter = LineSplitter()
    assert splitter.feed(b"Training prog") == []
    assert splitter.feed(b"ress: 10%") == []
    assert splitter.feed(b"\r") == ["Training progress: 10%"]


def test_tqdm_redraws_become_one_line_each_in_order():
    redraws = [
        f"Training progress: {pct:3d}%|{'#' * (pct // 10):<10}| {n}/20 [00:0{n // 10}<00:01, 9.90it/s, "
        f"Loss=0.{n:07d}, psnr=3{n // 10}.00, point=34650]"
        for pct, n in ((0, 0), (50, 10), (100, 20))
    ]
    # tqdm writes "\r" + bar for every redraw and "\n" when the bar closes; other output interleaves.
    stream = b"data loading done [16/11 12:26:35]\n"
    stream += b"".join(b"\r" + redraw.encode() for redraw in redraws) + b"\n"
    stream += b"[ITER 20] Saving Gaussians [16/11 12:26:37]\n"
    for chunks in ([stream], every_byte(stream), random_chunks(stream, 1)):
        lines = [line for line in feed_all(chunks) if line]
        assert lines == [
            "data loading done [16/11 12:26:35]",
            *redraws,
            "[ITER 20] Saving Gaussians [16/11 12:26:37]",
        ]


def test_output_does_not_depend_on_how_the_stream_is_chunked():
    stream = (
        "Optimizing output/obama\r\nOutput folder: output/obama [16/11 12:26:35]\n"
        "\rTraining progress:   0%|          | 0/7999\rTraining progress:  45%|████▌     | 3600/7999"
        "\r\n[ITER 500] Saving Gaussians\n\nprénom café 你好 😀\rtail"
    ).encode()
    whole = feed_all([stream])
    assert whole[-2:] == ["prénom café 你好 😀", "tail"]
    assert feed_all(every_byte(stream)) == whole
    for seed in range(20):
        assert feed_all(random_chunks(stream, seed)) == whole


@pytest.mark.parametrize("text", ["é", "你", "😀", "█"])
def test_multibyte_character_split_across_chunks_is_decoded_whole(text):
    encoded = text.encode()
    assert len(encoded) > 1
    for cut in range(1, len(encoded)):
        splitter = LineSplitter()
        lines = splitter.feed(b"x" + encoded[:cut])
        assert lines == []
        # The incomplete character waits in the pending bytes, undecoded.
        assert splitter._pending == b"x" + encoded[:cut]
        lines = splitter.feed(encoded[cut:] + b"y\n")
        assert lines == [f"x{text}y"]
        assert "\ufffd" not in lines[0]


def test_invalid_utf8_is_replaced_not_raised():
    assert feed_all([b"bad \xff\xfe byte\n"]) == ["bad \ufffd\ufffd byte"]


def test_close_flushes_the_unterminated_remainder_once():
    splitter = LineSplitter()
    assert splitter.feed(b"done\nTraining complete.") == ["done"]
    assert splitter.close() == ["Training complete."]
    assert splitter.close() == []


def test_close_after_a_complete_line_returns_nothing():
    splitter = LineSplitter()
    splitter.feed(b"line\n")
    assert splitter.close() == []


def test_overlong_line_in_one_chunk_is_cut_to_max_line():
    lines = feed_all([b"x" * 250 + b"\nshort\n"], max_line=100)
    assert len(lines[0]) == 100
    assert lines[-1] == "short"
    assert all(len(line) <= 100 for line in lines)


def test_endless_line_does_not_grow_the_buffer_without_bound():
    # An engine that prints without ever ending a line must not make the runner hold it all in memory.
    splitter = LineSplitter(max_line=100)
    emitted = []
    for _ in range(50):
        emitted.extend(splitter.feed(b"z" * 30))
        assert len(splitter._pending) <= 100 + 30
    assert emitted
    assert all(len(line) <= 100 for line in emitted)


def test_overlong_multibyte_line_is_cut_at_a_character_boundary():
    # max_line=100 bytes falls inside the 34th three-byte character.
    lines = feed_all(["你".encode() * 60 + b"\n"], max_line=100)
    assert lines
    assert "\ufffd" not in "".join(lines)


def test_overlong_line_is_kept_whole_in_pieces_whatever_the_chunking():
    text = "".join(chr(ord("a") + i % 26) for i in range(1050))
    stream = text.encode() + b"\nafter\n"
    expected = feed_all([stream], max_line=100)
    assert all(len(line) <= 100 for line in expected)
    assert "".join(expected[:-1]) == text  # the log is kept whole (DESIGN: "log kept whole")
    assert expected[-1] == "after"
    assert feed_all(random_chunks(stream, 3), max_line=100) == expected
    assert feed_all([stream[i : i + 64] for i in range(0, len(stream), 64)], max_line=100) == expected


def test_every_line_comes_out_including_the_unterminated_last():
    assert feed_all([b"a\r", b"\nb\rc", b"\nd"]) == ["a", "b", "c", "d"]


def test_a_complete_bar_redraw_is_sent_at_once_not_held_until_the_next_one():
    splitter = LineSplitter()
    first = "Training progress:  10%|█         | 10/100 [00:01<00:09, 10.0it/s, Loss=0.1000000, psnr=10.00]"
    second = "Training progress:  20%|██        | 20/100 [00:02<00:08, 10.0it/s, Loss=0.0900000, psnr=10.46]"
    assert splitter.feed(f"data loading done\n\r{first}".encode()) == ["data loading done", "", first]
    assert splitter.feed(f"\r{second}".encode()) == [second]  # the \r closing `first` ends nothing new
    assert splitter.feed(b"\n[ITER 20] Saving Gaussians\n") == ["[ITER 20] Saving Gaussians"]
    # A redraw still being written (no closing bracket yet) waits for the rest. (The "" is the empty line
    # that tqdm's leading \r ends right after a \n, as in the whole-stream split.)
    assert splitter.feed(b"\rTraining progress:  30%|###  | 30/100 [00:03<00:07, 10.0it/s, Lo") == [""]
    assert splitter.feed(b"ss=0.08]") == [
        "Training progress:  30%|###  | 30/100 [00:03<00:07, 10.0it/s, Loss=0.08]"
    ]
    assert splitter.close() == []


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_text_glued_after_a_bar_that_was_never_closed_is_its_own_line():
    # synctalk_test.txt is Trainer.test's own calls (nerf_triplane/utils.py:1056–1103): its bar has no "|"
    # and is never closed, so "==> Finished Test." is written right after the last redraw.
    data = (FIXTURES / "synctalk_test.txt").read_bytes()
    for chunk in (1, 7, 89, len(data)):
        lines = feed_all([data[i : i + chunk] for i in range(0, len(data), chunk)])
        at = lines.index("==> Finished Test.")
        assert lines[at - 1].endswith("it/s]") and "%" in lines[at - 1]


def test_a_print_glued_after_a_tqdm_bar_is_its_own_line():
    # gaussiantalker_train_nan.txt: train.py:180 prints while the bar of train.py:68 is open
    data = (FIXTURES / "gaussiantalker_train_nan.txt").read_bytes()
    lines = feed_all([data[i : i + 97] for i in range(0, len(data), 97)])
    nan = [line for line in lines if "loss is nan" in line]
    assert nan == ["loss is nan,end training, reexecv program now. [16/11 12:28:20]"]


def test_a_complete_bar_without_a_body_is_sent_at_once():
    # SyncTalk's bar_format has no "{bar}" (nerf_triplane/utils.py:1056): "100% 12/12 [00:00<00:00, 2.5it/s]"
    data = (FIXTURES / "synctalk_test.txt").read_bytes()
    start = data.index(b"==> Start Test")
    first_redraw = data.index(b"\r", data.index(b"\r", start) + 1)  # after the empty bar's draw
    splitter = LineSplitter()
    lines = splitter.feed(data[start:first_redraw])
    assert lines[-1].endswith("?it/s]") and lines[-1].lstrip().startswith("0%")


# --- follow: a node process's output, line by line, until it ends ------------------------------------


def _follow_local(command: str, marker: str, **options):
    from gpu_nodes.connections import LocalConnection

    conn = LocalConnection()
    process = conn.start(["sh", "-c", command], marker=marker)
    seen: list[str] = []
    try:
        started = time.monotonic()
        code = follow(process, seen.extend, max_line=4000, poll=0.1, drain_seconds=0.5, **options)
        return code, seen, time.monotonic() - started
    finally:
        conn.kill_tree(process.pid, marker=marker, grace=0.5)


def test_follow_hands_over_every_line_in_order_and_returns_the_exit_code():
    code, seen, _ = _follow_local(r"printf 'one\ntwo\r50%%|#  | 1/2 [00:01<00:01]\rlast'; exit 3", "61.1")
    assert code == 3
    assert seen == ["one", "two", "50%|#  | 1/2 [00:01<00:01]", "last"]


def test_follow_stops_reading_when_a_child_outlives_the_process_holding_its_output():
    code, seen, took = _follow_local("sleep 30 & echo done; exit 0", "61.2")
    assert (code, seen) == (0, ["done"]) and took < 10


def test_follow_returns_none_at_once_when_asked_to_stop():
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 3

    code, _, took = _follow_local("echo start; sleep 30", "61.3", should_stop=should_stop)
    assert code is None and took < 10
