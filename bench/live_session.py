"""Sentence audio → first video bytes out: a warm live render session against the cold per-sentence clip path.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/live_session.py``.

Setup: a demo avatar's rows and dataset (its val-split frames as ``gt_imgs`` of a generated face video,
``transforms_val.json``, the run folder render.py reads) on a local node of the bench's own; no worker: both
sides run from this process with the platform's own code, on the same node, for the same sentences (real
espeak-ng speech, 16 kHz).

- **Warm session** (value): ``chat.live`` admits and starts the checkpoint's session once (not timed: the
  page's warm-up does it when the conversation opens); then per sentence, as ``LiveRenderer`` does: the WAV
  put on the node, the render request through the relay, until the first fMP4 piece (the init segment and
  the first fragment's bytes are what the browser's Media Source needs to show a frame) is back here.
- **Cold clip path** (baseline): ``chat.video.NodeRenderer.render`` per sentence (pose view, audio
  features, the demo render.py, web encode, all started afresh), until the whole MP4 is back: only then can
  the browser play the sentence.

``value`` and ``baseline`` are medians over interleaved runs; ``ratio`` = value / baseline. Also: the
session's load time, its resident memory (VmRSS of the session process after the runs, with its ffmpeg
children not counted), and the whole-sentence time of the warm side (last piece).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

from _harness import Bench, log, report

SENTENCES = [
    "Hello, I am Ada, and I am glad you came to talk with me today.",
    "The weather has been lovely all week.",
    "Tell me what you would like to talk about, and we can begin.",
]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def dataset(folder: Path, frames: int = 19) -> None:
    """The parts of a preprocessed demo dataset both sides read: val frames (320×320 like the pipeline's
    test videos), transforms_val.json."""
    import json

    (folder / "gt_imgs").mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x320:rate=25", "-frames:v", str(frames), "-start_number",
           "100", str(folder / "gt_imgs" / "%d.jpg"))  # fmt: skip
    (folder / "transforms_val.json").write_text(
        json.dumps({"frames": [{"img_id": 100 + i} for i in range(frames)]})
    )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def trained_avatar(bench: Bench, owner, name: str, node=None):
    """A trained demo avatar's rows and its dataset (``dataset``) on ``node``, or on a new local node of its
    own: (node, avatar, checkpoint). Used by this bench, chat_latency.py and live_conversations.py."""
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint, DatasetCopy
    from gpu_nodes.models import Node
    from gpu_nodes.services import node_probe

    if node is None:
        workdir = bench.tmp / f"node-{name}"
        workdir.mkdir()
        node = Node.objects.create(name=f"bench-{name}", kind=Node.Kind.LOCAL, workdir=str(workdir))
        node = node_probe(node=node)
        if node.status != Node.Status.ONLINE:
            raise RuntimeError(f"node {node.name} is not online: {node.last_error}")
    workdir = Path(node.workdir)
    avatar = Avatar.objects.create(
        owner=owner, name=f"Ada {name}", slug=f"ada-{name}", engine="demo", status=Avatar.Status.TRAINED,
        video="x.mp4", consent_given_at=timezone.now(), consent_given_by=owner, consent_statement="bench",
    )  # fmt: skip
    data = workdir / "data" / avatar.slug
    dataset(data)
    run = workdir / "output" / avatar.slug / "run-1"
    (run / "point_cloud" / "iteration_10").mkdir(parents=True)
    (run / "cfg_args").write_text("Namespace()")
    DatasetCopy.objects.create(avatar=avatar, node=node, path=str(data), complete=True)
    checkpoint = Checkpoint.objects.create(avatar=avatar, node=node, stage="fine", iteration=10,
                                           path=str(run / "point_cloud" / "iteration_10"))  # fmt: skip
    return node, avatar, checkpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with Bench("live_session") as bench:
        import os

        os.environ["MEDIA_ROOT"] = str(bench.tmp / "media")
        from django.conf import settings

        from accounts.models import User
        from avatars.engines import live as wire
        from chat import live, tts
        from chat.services import CHAT_REPLY
        from chat.video import NodeRenderer
        from gpu_nodes.connections import LocalConnection
        from jobs.models import Job
        from videos.services import wav_seconds

        settings.MEDIA_ROOT = bench.tmp / "media"
        settings.CHAT_XTTS_DIR = ""
        owner = User.objects.create_user("bench")
        node, avatar, checkpoint = trained_avatar(bench, owner, "bench")
        workdir = Path(node.workdir)
        job = Job.objects.create(owner=owner, kind=CHAT_REPLY, node=node, avatar=avatar,
                                 gpu=node.gpus.first(), status=Job.Status.RUNNING, attempts=1,
                                 params={"message": 0, "checkpoint": checkpoint.pk})  # fmt: skip
        wavs = []
        for index, text in enumerate(SENTENCES):
            speech = tts.synthesize(text, language="en", out=bench.tmp / f"s{index}.wav", reference=None,
                                    voice_folder=None)  # fmt: skip
            wav = bench.tmp / f"s{index}-16k.wav"
            ffmpeg("-i", str(speech.path), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(wav))
            wavs.append((wav, wav_seconds(wav)))

        started = time.monotonic()
        session = live.live_session_ready(checkpoint=checkpoint, publish=lambda event: None)
        start_s = time.monotonic() - started
        log(f"session {session.pk} ready in {start_s:.2f} s (model load {session.load_seconds} s)")
        conn = LocalConnection(node)
        link = wire.open_link(conn, node, session.socket, marker="bench-relay")
        warm, warm_whole, cold = [], [], []
        renderer = NodeRenderer(job=job, checkpoint=checkpoint, log=lambda line: None)
        try:
            for round_ in range(args.runs + 1):  # round 0 warms both sides up (imports, caches)
                for index, (wav, seconds) in enumerate(wavs):
                    remote = str(workdir / "live" / "bench" / f"{round_}-{index}.wav")
                    asked = time.monotonic()
                    conn.put(wav, remote)
                    first = None
                    for header, _ in link.render(
                        ident=index, wav=remote, pose_start=0, should_stop=lambda: False
                    ):
                        if first is None and "piece" in header and header["piece"] == 1:
                            first = time.monotonic() - asked  # init segment + first fragment
                        if "done" in header or "error" in header:
                            assert header.get("done"), header
                    whole = time.monotonic() - asked
                    asked = time.monotonic()
                    target = bench.tmp / f"cold-{round_}-{index}.mp4"
                    renderer.render(index=index, wav=wav, seconds=seconds, pose_start=0, target=target,
                                    should_stop=lambda: False)  # fmt: skip
                    clip = time.monotonic() - asked
                    if round_:
                        warm.append(first)
                        warm_whole.append(whole)
                        cold.append(clip)
                log(f"round {round_}: warm first piece {first:.3f} s (whole {whole:.3f}), cold {clip:.3f} s")
            memory_mb = round(rss_kb(session.pid) / 1024, 1)
        finally:
            renderer.close()
            link.close()
            live.live_session_end(session=session, reason="bench done")
        value, baseline = round(statistics.median(warm), 4), round(statistics.median(cold), 4)
        report(
            bench="live_session",
            value=value,
            unit="s",
            baseline=baseline,
            baseline_name="cold per-sentence clip path (NodeRenderer: pose view, features, demo render.py, "
            "web encode, MP4 fetched), same node and sentences",
            ratio=round(value / baseline, 4),
            warm_whole_sentence_s=round(statistics.median(warm_whole), 4),
            sentence_seconds=[round(s, 2) for _, s in wavs],
            session_start_s=round(start_s, 3),
            session_load_s=session.load_seconds,
            session_rss_mb=memory_mb,
            runs=args.runs,
            load_at_start=bench.load_at_start,
        )


if __name__ == "__main__":
    main()
