"""Time to the first VIDEO chunk of a chat reply, streamed (ours) against the prototype's sequential pipeline.

Run from the repository root with PostgreSQL and Redis up: ``.venv/bin/python bench/chat_first_chunk.py``.

Setup: a demo avatar is preprocessed and trained through the real pipeline by a real worker on a local
node of the bench's own (a few seconds of a generated face video); the worker is then stopped, so both
sides below render on that node from this process, with the same connection code, the same render chain
(``videos.job_kind.speech_render``: pose view, audio features, the demo render.py, web encode) and the
same checkpoint.

Both sides get the same five-sentence reply from the same loopback OpenAI-compatible server
(``_harness.LoopbackLLM``), which streams it like a hosted model: a first token after ``--ttft`` seconds,
then ~4-character tokens at ``--tps`` per second (glm-4-flash-like defaults). Speech is espeak-ng on both
sides (real, and fast enough that the LLM's pace and the render decide: XTTS, slower per character, would
favour the streamed side further).

- **Ours**: ``chat.turn.reply_run`` with a ``chat.video.NodeRenderer`` on a real conversation (a
  chat_reply job row pinned to the node stands for the worker's claimed job): the LLM stream is cut into
  sentences as it arrives, each is spoken at once and handed to the renderer thread, which renders it on
  the node while the next is spoken. Value: from the start of the turn to the moment the first clip (its
  MP4 back in MEDIA_ROOT, its row saved) is announced (``chat.chunk_video``).
- **Sequential** (the prototype): read the whole reply, then speak all of it, then render all of it once.
  Baseline: from the request to the MP4 of the whole reply back in MEDIA_ROOT.

``value`` and ``baseline`` are medians over interleaved runs; ``ratio`` = value / baseline (issue 6's
target: ≤ 0.4). The extra keys say where the time goes on each side (medians).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import Bench, LoopbackLLM, log, report, tokens

REPLY = (
    "Hello, I am Ada, and I am glad you came to talk with me today. "
    "The weather has been lovely all week, with long sunny afternoons. "
    "I spent most of yesterday reading a book about the history of clocks. "
    "Did you know that the first mechanical clocks had no minute hand at all? "
    "Tell me what you would like to talk about, and we can begin."
)


def train_avatar(bench, owner):
    """A demo avatar trained through the real pipeline by a real worker on a local node of our own."""
    import skimage
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile

    from avatars.models import Avatar
    from avatars.pipeline import avatar_train
    from avatars.services import avatar_create, avatar_proceed_anyway
    from gpu_nodes.models import Node
    from gpu_nodes.services import node_probe

    workdir = bench.tmp / "node"
    workdir.mkdir()
    node = node_probe(node=Node.objects.create(name="bench-chat", kind=Node.Kind.LOCAL, workdir=str(workdir)))
    worker = bench.worker(node.name, "worker")
    video = bench.tmp / "ada.mp4"
    face = Path(skimage.__file__).parent / "data" / "astronaut.png"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-loop", "1", "-i", str(face),
         "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100",
         "-vf", "scale=320:320,zoompan=z='1+0.02*sin(on/8)':d=1:s=320x320:fps=25",
         "-t", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(video)],
        check=True,
    )  # fmt: skip
    settings.AVATAR_MIN_SECONDS, settings.QUALITY_SAMPLE_FRAMES, settings.QUALITY_MIN_FACE_PIXELS = 2, 4, 30
    upload = SimpleUploadedFile("ada.mp4", video.read_bytes())
    avatar = avatar_create(owner=owner, name="Ada", engine="demo", video=upload, consent=True)
    if avatar.status == Avatar.Status.NEEDS_ATTENTION:
        avatar = avatar_proceed_anyway(avatar=avatar)
    avatar_train(avatar=avatar, owner=owner, iterations=20, seconds=0.2)
    deadline = time.monotonic() + 300
    while avatar.status not in (Avatar.Status.TRAINED, Avatar.Status.FAILED):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the avatar's training did not end:\n{bench.log_tail('worker')}")
        bench.check_alive()
        time.sleep(0.3)
        avatar.refresh_from_db()
    if avatar.status != Avatar.Status.TRAINED:
        raise RuntimeError(f"the avatar's training failed:\n{bench.log_tail('worker')}")
    # Rendering from here on happens in this process on the node's connection: no worker needed.
    os.killpg(worker.pid, 15)
    worker.wait(30)
    bench.processes.remove(worker)
    worker.log_file.close()
    return avatar, node


def job_row(owner, avatar, node, params: dict):
    """A running chat_reply job on the node, as the worker holds one once it claimed it (no slot row: the
    runs follow one another, and the bench's node has no other work)."""
    from chat.services import CHAT_REPLY
    from jobs.models import Job

    return Job.objects.create(
        owner=owner, kind=CHAT_REPLY, params=params, node=node, avatar=avatar,
        status=Job.Status.RUNNING, attempts=1,
    )  # fmt: skip


def sequential(config, renderer, folder: Path) -> dict:
    """The prototype's order: the whole reply, then speech for all of it, then one render of all of it."""
    from avatars.media import engine_wav
    from chat import llm, tts
    from videos.services import wav_seconds

    started = time.monotonic()
    text = "".join(llm.stream_chat([{"role": "user", "content": "Hi!"}], config=config))
    llm_done = time.monotonic()
    tts.synthesize(text, language="en", out=folder / "sequential.wav")
    engine_wav(folder / "sequential.wav", folder / "sequential-16k.wav")
    tts_done = time.monotonic()
    seconds = wav_seconds(folder / "sequential-16k.wav")
    renderer.render(
        index=999, wav=folder / "sequential-16k.wav", seconds=seconds, pose_start=0,
        target=folder / "sequential.mp4", should_stop=lambda: False,
    )  # fmt: skip
    done = time.monotonic()
    return {"total": done - started, "llm": llm_done - started, "tts": tts_done - llm_done,
            "render": done - tts_done, "audio_seconds": seconds}  # fmt: skip


STEP_NAMES = ("poses", "audio features", "render", "encode")


def step_seconds(lines: list[tuple[float, str]]) -> dict[str, float]:
    """How long each step of the first clip's chain took, from the times its marker lines arrived."""
    marks = [(at, line.split(": ", 1)[1]) for at, line in lines if line.startswith("[talkforge] step ")]
    ends = [at for at, line in lines if line == "[talkforge] done"]
    if len(marks) < len(STEP_NAMES) or not ends:
        return {}
    marks = marks[: len(STEP_NAMES)] + [(ends[0], "done")]
    return {name: later - at for (at, name), (later, _) in zip(marks, marks[1:], strict=False)}


def streamed(conversation, renderer) -> dict:
    """Ours: seconds to the first clip, and where they went."""
    from chat.models import Message
    from chat.turn import reply_run

    lines: list[tuple[float, str]] = []
    renderer.log = lambda line: lines.append((time.monotonic(), line))

    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")
    first: list[float] = []
    started = time.monotonic()

    def publish(event):
        if event["type"] == "chat.chunk_video" and not first:
            first.append(time.monotonic() - started)

    reply = reply_run(reply=reply, publish=publish, renderer=renderer)
    whole = time.monotonic() - started
    chunks = list(reply.chunks.order_by("index"))
    assert reply.status == "done" and len(chunks) == 5 and all(c.video for c in chunks), (
        reply.status, reply.error, reply.video_note,
    )  # fmt: skip
    return {
        "first_video": first[0], "whole": whole, "first_sentence": reply.timings["first_sentence"],
        "first_audio": reply.timings["tts_first_audio"], "first_render": chunks[0].timings["render"],
        "first_audio_seconds": chunks[0].audio_seconds,
        **{f"step {name}": seconds for name, seconds in step_seconds(lines).items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ttft", type=float, default=0.4, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=60.0, help="tokens per second after it")
    args = parser.parse_args()

    media = Path(tempfile.mkdtemp(prefix="talkforge-bench-chat-media-"))
    os.environ["MEDIA_ROOT"] = str(media)
    try:
        with LoopbackLLM(REPLY, ttft=args.ttft, tps=args.tps) as server, Bench("chat_first_chunk") as bench:
            from django.conf import settings

            from accounts.models import User
            from chat import llm, services
            from chat.video import NodeRenderer
            from videos.services import default_checkpoint

            settings.CHAT_LLM_BASE_URL = server.url
            settings.CHAT_XTTS_DIR = ""
            owner = User.objects.create_user("bench")
            avatar, node = train_avatar(bench, owner)
            checkpoint = default_checkpoint(avatar)
            log(f"avatar trained; rendering with checkpoint {checkpoint.stage} {checkpoint.iteration}")
            config = llm.config_for()
            ours, base = [], []
            for run in range(args.runs + 1):  # the first run of each side warms up (imports, caches)
                conversation = services.conversation_create(owner=owner, avatar=avatar, language="en")
                job = job_row(owner, avatar, node, {"message": 0, "checkpoint": checkpoint.pk})
                renderer = NodeRenderer(job=job, checkpoint=checkpoint, log=lambda line: None)
                try:
                    mine = streamed(conversation, renderer)
                    theirs = sequential(config, renderer, bench.tmp)
                finally:
                    renderer.close()
                log(
                    f"run {run}: first clip {mine['first_video']:.3f} s (first sentence "
                    f"{mine['first_sentence']:.3f}, spoken {mine['first_audio']:.3f}, render "
                    f"{mine['first_render']:.3f}; reply {mine['whole']:.3f} s)"
                )
                log(
                    f"run {run}: sequential {theirs['total']:.3f} s (llm {theirs['llm']:.3f}, tts "
                    f"{theirs['tts']:.3f}, render {theirs['render']:.3f} of {theirs['audio_seconds']:.1f} s)"
                )
                if run:
                    ours.append(mine)
                    base.append(theirs)

            def median(rows, key):
                return round(statistics.median(row[key] for row in rows), 4)

            value, baseline = median(ours, "first_video"), median(base, "total")
            report(
                bench="chat_first_chunk",
                value=value,
                unit="s",
                baseline=baseline,
                baseline_name="sequential (seed): whole LLM reply, then TTS of all of it, then one render "
                "of all of it (demo engine, same node and chain)",
                ratio=round(value / baseline, 4),
                ours_first_sentence_s=median(ours, "first_sentence"),
                ours_first_audio_s=median(ours, "first_audio"),
                ours_first_render_s=median(ours, "first_render"),
                # The first clip's chain on the node, step by step (the rest of ours_first_render_s is
                # the 16 kHz conversion, the copies to and from the node and starting the chain).
                ours_first_render_steps_s={name: median(ours, f"step {name}") for name in STEP_NAMES},
                ours_first_sentence_audio_s=median(ours, "first_audio_seconds"),
                ours_whole_reply_s=median(ours, "whole"),
                sequential_llm_s=median(base, "llm"),
                sequential_tts_s=median(base, "tts"),
                sequential_render_s=median(base, "render"),
                reply_audio_s=median(base, "audio_seconds"),
                llm=f"ttft {args.ttft} s, {args.tps:g} tokens/s, {len(tokens(REPLY))} tokens",
                speech="espeak-ng",
                runs=args.runs,
                load_at_start=bench.load_at_start,
            )
    finally:
        shutil.rmtree(media, ignore_errors=True)


if __name__ == "__main__":
    main()
