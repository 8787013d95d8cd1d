"""N concurrent live conversations on one demo node: does any stream stall, and what does a session weigh?

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/live_conversations.py``.

Setup (bench/chat_latency.py's): one local node of the bench's own with ``max(--n)`` trained demo avatars
(a live session each: a session is per checkpoint, so N conversations of one avatar would share one),
``max(--n)`` real workers on the node (one turn each at a time), daphne, the loopback LLM at a hosted
model's pace, espeak-ng speech, ``LIVE_SESSIONS`` on. Every conversation's page is opened in Chromium
first and sends one untimed typed turn (it starts its avatar's session: a page warms up only in
hands-free), then for each N the first N pages send a typed turn at once and each plays its streamed
reply (three sentences).

Measured in each page (each in a browser context of its own) on the live ``<video>``, sampled every
10 ms once playback began: the longest stretch in which the video's time stood still while it was neither
paused nor ended (a frozen picture, or the still shown between two sentences when the next one is late),
``waiting`` events after playback began (stalls), frames decoded and dropped
(``getVideoPlaybackQuality``), and the longest gap between frames the page painted
(``requestVideoFrameCallback``; headless, so the compositor's pace, not the stream's). Measured from this
process: each session process's resident memory (VmRSS; its ffmpeg children not counted), sampled every
0.2 s during the N conversations, its largest value, and at rest after the warm-up turns. One JSON line,
one entry per N (``value``: the longest freeze at the largest N).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

from _harness import Bench, LoopbackLLM, chromium, log, log_in, open_chat, report, tokens
from chat_latency import REPLY, settle
from live_session import trained_avatar

# N pages play at once, as N people's browsers would, each in the foreground: without these, Chromium
# throttles every page but the front one (timers and video frame callbacks at ~1 Hz).
FOREGROUND = [
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]  # fmt: skip

# Installed in each page before its turn: every presented frame of the live video and its waiting events.
WATCH = """() => {
  const video = document.getElementById('avatar-live');
  const watch = window.__watch = {samples: [], waiting: 0, began: null, frames: []};
  const frame = (now, meta) => { watch.frames.push(now); video.requestVideoFrameCallback(frame); };
  video.requestVideoFrameCallback(frame);
  video.addEventListener('playing', () => { if (watch.began === null) watch.began = performance.now(); });
  video.addEventListener('waiting', () => { if (watch.began !== null) watch.waiting += 1; });
  const timer = setInterval(() => {
    if (watch.began === null) return;
    const quality = video.getVideoPlaybackQuality();
    watch.samples.push([performance.now(), video.currentTime, video.paused || video.ended,
                        quality.totalVideoFrames, quality.droppedVideoFrames]);
    if (video.ended) clearInterval(timer);
  }, 10);
}"""


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryWatch(threading.Thread):
    """The largest VmRSS of each live session process while it runs (every 0.2 s)."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, dict.fromkeys(pids, 0), threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_kb(pid))
            time.sleep(0.2)


def gaps(watch: dict) -> dict:
    """From the page's samples (every 10 ms once playback began): the longest stretch of wall time in which
    the video's time stood still while it was neither paused nor ended (a frozen picture or the still
    between two sentences), frames decoded and dropped, and the longest gap between presented frames
    (``requestVideoFrameCallback``: the page's own painting)."""
    longest, since = 0.0, None
    samples = watch["samples"]
    for (at, time_, stopped, *_), (later, next_time, _, *_) in zip(samples, samples[1:], strict=False):
        if not stopped and next_time == time_:
            since = at if since is None else since
            longest = max(longest, later - since)
        else:
            since = None
    frames = watch["frames"]
    painted = max((b - a for a, b in zip(frames, frames[1:], strict=False)), default=0)
    last = samples[-1] if samples else [0, 0, 0, 0, 0]
    return {"longest_freeze_ms": round(longest, 1), "frames": last[3], "dropped": last[4],
            "longest_paint_gap_ms": round(painted, 1), "media_s": round(last[1], 2)}  # fmt: skip


def turn(pages, bench: Bench) -> list[dict]:
    """A typed turn sent in each of ``pages`` at once; each page's figures once its reply has played."""
    for page in pages:
        page.evaluate(WATCH)
        page.evaluate("window.__before = window.TalkforgeChat.replies.length")
    for page in pages:  # all the turns within a few tens of ms
        page.fill("#talk-text", "Tell me something.")
        page.click("#talk-form button[type=submit]")
    per_page = []
    for page in pages:
        page.wait_for_function("window.TalkforgeChat.replies.length > window.__before")
        page.wait_for_function("document.getElementById('avatar-live').ended")
        seen = page.evaluate("({watch: window.__watch, turn: window.TalkforgeChat.turns.at(-1)})")
        if page.errors:
            raise RuntimeError(f"page errors: {page.errors}")
        status = settle(seen["turn"]["id"], bench)
        if status != "done":
            raise RuntimeError(f"reply {seen['turn']['id']} ended {status}")
        watched = seen["watch"]
        per_page.append({**gaps(watched), "waiting": watched["waiting"]})
    return per_page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="concurrent conversations")
    parser.add_argument("--ttft", type=float, default=0.3, help="LLM: seconds to the first token")
    parser.add_argument("--tps", type=float, default=30.0, help="LLM: tokens (4 characters) per second")
    parser.add_argument("--fps", default="0", help="LIVE_DEMO_FPS of the sessions (0: as fast as it goes)")
    args = parser.parse_args()
    most = max(args.n)

    with LoopbackLLM(REPLY, ttft=args.ttft, tps=args.tps) as llm:
        bench = Bench("live_conversations")
        os.environ.update(MEDIA_ROOT=str(bench.tmp / "media"), CHAT_XTTS_DIR="")
        with bench:
            from django.contrib.auth import get_user_model
            from playwright.sync_api import sync_playwright

            from chat import services
            from chat.models import LiveSession

            user = get_user_model().objects.create_user("bench", password="bench-password-1")
            node, avatars = None, []
            for index in range(most):
                node_i, avatar, _ = trained_avatar(bench, user, f"c{index}", node=node)
                node = node_i
                avatars.append(avatar)
            os.environ.update(
                CHAT_LLM_BASE_URL=llm.url, CHAT_LLM_API_KEY="sk-bench",
                LIVE_SESSIONS="true", LIVE_DEMO_FPS=str(args.fps), LIVE_SESSIONS_PER_CPU_SLOT=str(most),
            )  # fmt: skip
            for index in range(most):
                bench.worker(node.name, f"worker-{index}")
            url = "http://" + bench.daphne()
            bench.wait_workers(node.queue_name, most)
            conversations = [
                services.conversation_create(owner=user, avatar=a, language="en").pk for a in avatars
            ]
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # ORM reads between Playwright's sync calls
            results = []
            with sync_playwright() as playwright:
                browser = chromium(playwright, *FOREGROUND)
                login = browser.new_context(base_url=url)
                log_in(login.new_page())
                state = login.storage_state()  # the session cookie: each page gets a context of its own
                login.close()
                pages = []
                for pk in conversations:
                    page = browser.new_context(base_url=url, storage_state=state).new_page()
                    page.set_default_timeout(120_000)
                    page.errors = []
                    page.on("pageerror", lambda error, page=page: page.errors.append(str(error)))
                    open_chat(page, pk)  # its warm-up starts the avatar's session
                    pages.append(page)
                turn(pages, bench)  # warm-up: each conversation's first turn starts its avatar's session
                sessions = list(LiveSession.objects.filter(state=LiveSession.State.READY))
                if len(sessions) != most:
                    raise RuntimeError(f"{len(sessions)} live sessions are ready, not {most}")
                idle_kb = {s.pk: rss_kb(s.pid) for s in sessions}
                for n in args.n:
                    watch = MemoryWatch([s.pid for s in sessions])
                    watch.start()
                    started = time.monotonic()
                    per_page = turn(pages[:n], bench)
                    watch.stop.set()
                    watch.join()
                    row = {
                        "n": n,
                        "longest_freeze_ms": max(p["longest_freeze_ms"] for p in per_page),
                        "stalls": sum(p["waiting"] for p in per_page),
                        "frames_decoded": [p["frames"] for p in per_page],
                        "frames_dropped": sum(p["dropped"] for p in per_page),
                        "media_s": [p["media_s"] for p in per_page],
                        "longest_paint_gap_ms": max(p["longest_paint_gap_ms"] for p in per_page),
                        "session_rss_mb": [round(kb / 1024, 1) for kb in watch.peak.values()],
                        "seconds": round(time.monotonic() - started, 2),
                    }
                    log(f"N={n}: {row}")
                    results.append(row)
                browser.close()
        report(
            bench="live_conversations", value=results[-1]["longest_freeze_ms"], unit="ms",
            value_name=f"longest freeze of a playing stream at N={results[-1]['n']}", per_n=results,
            session_idle_rss_mb=round(statistics.median(idle_kb.values()) / 1024, 1),
            llm=f"ttft {args.ttft} s, {args.tps:g} tokens/s, {len(tokens(REPLY))} tokens (3 sentences)",
            demo_fps=args.fps, load_at_start=bench.load_at_start,
        )  # fmt: skip


if __name__ == "__main__":
    main()
