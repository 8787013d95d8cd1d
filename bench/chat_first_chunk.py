"""Time to the first spoken chunk of a chat reply, streamed (ours) against the seed's sequential pipeline.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/chat_first_chunk.py``.

Both sides get the same five-sentence reply from the same loopback OpenAI-compatible server, which streams
it like a hosted model: a first token after ``--ttft`` seconds, then ~4-character tokens at ``--tps`` per
second (glm-4-flash-like defaults). Speech is espeak-ng on both sides (real, and fast enough that the
LLM's pace decides: XTTS, slower per character, would favour the streamed side further).

- **Ours**: ``chat.turn.reply_run`` on a real conversation in a fresh database: the LLM stream is cut into
  sentences as it arrives and each is spoken at once. Value: from the start of the turn to the moment
  the first chunk (its WAV written, its row saved) is announced.
- **Sequential** (the seed): read the whole reply, then speak all of it. Baseline: from the request to
  the WAV of the whole reply.

What is not measured yet: the render of each sentence's video on the avatar's node
(``chat.turn.render_chunk`` is not wired). The seed renders the whole reply once after TTS; ours will
render the first sentence only before it can be shown, so adding video should lower the ratio, not raise
it. ``value`` and ``baseline`` are medians over interleaved runs; ``ratio`` = value / baseline
(issue 6's target for the first video chunk: ≤ 0.4).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _harness import Bench, log, report

REPLY = (
    "Hello, I am Ada, and I am glad you came to talk with me today. "
    "The weather has been lovely all week, with long sunny afternoons. "
    "I spent most of yesterday reading a book about the history of clocks. "
    "Did you know that the first mechanical clocks had no minute hand at all? "
    "Tell me what you would like to talk about, and we can begin."
)


def tokens(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class StreamingLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint that streams REPLY at a hosted model's pace."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(self.server.ttft)
        try:
            for piece in tokens(REPLY):
                event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(1 / self.server.tps)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


def sequential(config, folder: Path) -> float:
    """The seed's order: the whole reply, then speech for all of it. Seconds to the whole reply's WAV."""
    from chat import llm, tts

    started = time.monotonic()
    text = "".join(llm.stream_chat([{"role": "user", "content": "Hi!"}], config=config))
    tts.synthesize(text, language="en", out=folder / "sequential.wav")
    return time.monotonic() - started


def streamed(conversation) -> tuple[float, float]:
    """Ours: seconds to the first spoken chunk, and to the whole reply."""
    from chat.models import Message
    from chat.turn import reply_run

    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")
    first: list[float] = []
    started = time.monotonic()

    def publish(event):
        if event["type"] == "chat.chunk" and not first:
            first.append(time.monotonic() - started)

    reply = reply_run(reply=reply, publish=publish)
    assert reply.status == "done" and reply.chunks.count() == 5, (reply.status, reply.error)
    return first[0], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ttft", type=float, default=0.4, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=60.0, help="tokens per second after it")
    args = parser.parse_args()

    media = Path(tempfile.mkdtemp(prefix="talkforge-bench-chat-media-"))
    os.environ["MEDIA_ROOT"] = str(media)
    server = ThreadingHTTPServer(("127.0.0.1", 0), StreamingLLM)
    server.daemon_threads = True
    server.ttft, server.tps = args.ttft, args.tps
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Bench("chat_first_chunk") as bench:
            from django.conf import settings
            from django.utils import timezone

            from accounts.models import User
            from avatars.models import Avatar
            from chat import llm, services

            settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{server.server_port}/v1/"
            settings.CHAT_XTTS_DIR = ""
            owner = User.objects.create_user("bench")
            avatar = Avatar.objects.create(
                owner=owner, name="Ada", slug="ada-bench", engine=Avatar.Engine.DEMO,
                status=Avatar.Status.TRAINED, video="-", consent_given_at=timezone.now(),
                consent_given_by=owner, consent_statement="bench",
            )  # fmt: skip
            config = llm.config_for()
            ours, whole, baseline = [], [], []
            sequential(config, bench.tmp)  # warm both paths once (espeak-ng's data, imports)
            for run in range(args.runs):
                conversation = services.conversation_create(owner=owner, avatar=avatar, language="en")
                first, done = streamed(conversation)
                ours.append(first)
                whole.append(done)
                baseline.append(sequential(config, bench.tmp))
                timings = f"first chunk {first:.3f} s (reply {done:.3f} s)"
                log(f"run {run + 1}: {timings}; sequential {baseline[-1]:.3f} s")
            value, base = statistics.median(ours), statistics.median(baseline)
            report(
                bench="chat_first_chunk",
                value=round(value, 4),
                unit="s",
                baseline=round(base, 4),
                baseline_name="sequential: whole LLM reply, then TTS of all of it (espeak-ng; no video yet)",
                ratio=round(value / base, 4),
                whole_reply_streamed_s=round(statistics.median(whole), 4),
                llm=f"ttft {args.ttft} s, {args.tps:g} tokens/s, {len(tokens(REPLY))} tokens",
                measures="first spoken chunk; video render per sentence not wired yet",
                runs=args.runs,
                load_at_start=bench.load_at_start,
            )
    finally:
        server.shutdown()
        shutil.rmtree(media, ignore_errors=True)


if __name__ == "__main__":
    main()
