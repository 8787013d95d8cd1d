"""The generate_video job: a trained avatar speaks a driving audio, on the node that holds its model.

A video from text is spoken first, in the worker, before the node's command (:func:`speak_text`).
Then one command, a chain of steps run one after the other while they succeed, so every step's console goes to
the job's log. The avatar's engine plug-in gives its steps (``Engine.speech_steps``):

GaussianTalker and demo
  1. poses: a per-job dataset view whose val poses are played ping-pong to cover the whole audio, and a
     per-job model folder (render.py writes into ``--model_path``; two generations must not collide);
  2. audio features: DeepSpeech ``extract_ds_features.py --input x.wav`` → ``x.npy`` (demo: a placeholder);
  3. render.py with ``--custom_aud/--custom_wav`` → ``<model>/custom/ours_<iter>/renders/…_renders.mov``;
SyncTalk (AVE)
  1. a per-job workspace whose ``checkpoints/`` holds only the chosen checkpoint (main.py loads the latest);
  2. ``main.py --test --test_train --portrait --aud x.wav`` → ``<ws>/results/ngp_ep<EEEE>_audio.mp4`` (its
     poses mirror natively);
and then, for every engine, the encode: a browser-playable MP4 (H.264 yuv420p + AAC, faststart) cut to the
audio's length, and a poster.

The chain is :func:`speech_render`, shared with the chat, which runs it once per sentence of a reply.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.urls import reverse

from avatars.engines.console import STEP, step_marker
from avatars.engines.shell import shell_and
from avatars.media import ENGINE_FPS
from avatars.models import Avatar, DatasetCopy
from core.params import owned_id, reject_unknown
from gpu_nodes.connections import NodeConnection
from gpu_nodes.runtime import wrap
from jobs.console import ConsoleParser, Update
from jobs.kinds import KindSpec, Plan, job_folder, register
from jobs.models import Job
from jobs.notify import notify
from jobs.stages import register_stage_labels

from .models import Video
from .selectors import videos_visible_to
from .services import GENERATE_VIDEO, POSTER, RESULT, video_record_result, video_speak


def audio_frames(seconds: float) -> int:
    """The 25-fps frames the audio drives: as many as its DeepSpeech features have windows (logits at
    50 per second, ``round(seconds × 50)`` of them, windows with stride 2: deepspeech_features.py:158, :71 at
    GaussianTalker 8ec613b), which is ceil(seconds × 25) or one less. The pose view holds exactly this many,
    so render.py renders them all even without the original prototype's clamp (upstream loses up to a batch
    when the poses outnumber the audio: render.py:90–95; docs/engines.md)."""
    return max(1, math.ceil(round(seconds * 2 * ENGINE_FPS) / 2))


step = step_marker  # the marker line before each step of the chain (avatars/engines/console.py)


def web_video(*, source: str, audio: str, seconds: float, target: str) -> list[str]:
    """The engine's video with the driving audio as an MP4 every browser plays: H.264 yuv420p (even sides)
    + AAC, the index first (``+faststart``), exactly as long as the audio. The last frame is held when the
    engine rendered a frame or so less than the audio lasts (its features can be one window short)."""
    return [
        "ffmpeg", "-nostdin", "-y", "-v", "error", "-i", source, "-i", audio,
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", "tpad=stop_mode=clone:stop_duration=2,scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
        "-r", str(ENGINE_FPS), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-c:a", "aac", "-b:a", "128k", "-t", f"{seconds:.3f}", "-movflags", "+faststart", target,
    ]  # fmt: skip


def poster_frame(*, source: str, target: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-y", "-v", "error", "-i", source, "-frames:v", "1", "-q:v", "3", target]


# --- the console ---------------------------------------------------------------------------------------


class GenerationParser(ConsoleParser):
    """Follows the chain's step markers; the engine's own parser reads the render step. Each step has a
    fixed share of the progress; the render's share moves with the engine's bar."""

    def __init__(self, *, steps: dict[str, float], engine: ConsoleParser, engine_step: str):
        self.shares = steps  # step name → share of the whole, in order
        self.engine, self.engine_step = engine, engine_step
        self.current: str | None = None
        self.started: list[str] = []
        self.finished = False
        self.best_progress = 0.0

    def _before(self, name: str) -> float:
        names = list(self.shares)
        return sum(self.shares[n] for n in names[: names.index(name)])

    def _progress(self, value: float) -> float:
        self.best_progress = max(self.best_progress, min(1.0, value))
        return self.best_progress

    def feed(self, line: str) -> Update | None:
        marker = STEP.match(line.strip())
        if marker and marker["name"] in self.shares:
            self.current = marker["name"]
            self.started.append(self.current)
            return Update(stage=self.current, progress=self._progress(self._before(self.current)))
        if line.strip() == "[talkforge] done":
            self.finished = True
            return Update(stage="done", progress=self._progress(1.0), eta_seconds=0.0)
        if self.current != self.engine_step:
            return None
        update = self.engine.feed(line)
        if update is None:
            return None
        if update.progress is not None:
            share = self.shares[self.engine_step]
            update.progress = self._progress(self._before(self.engine_step) + share * update.progress)
        update.stage = self.engine_step if update.stage is not None else None
        return update

    def outcome(self, returncode: int) -> str | None:
        if self.engine_step in self.started:
            # The engine's verdict first: it knows its failures (out of memory, a missing model file).
            following = list(self.shares)[list(self.shares).index(self.engine_step) + 1 :]
            engine_returncode = returncode if not set(following) & set(self.started) else 0
            if problem := self.engine.outcome(engine_returncode):
                return problem
        if returncode != 0:
            where = f"the {self.current} step" if self.current else "the job's setup"
            return f"Generation failed in {where} (exit code {returncode}): the log's last lines say why."
        if not self.finished:
            return "Video generation ended before all its steps ran: the log's last lines say why."
        return None


# --- the plan ----------------------------------------------------------------------------------------


def dataset_on(avatar: Avatar, node) -> PurePosixPath:
    """The avatar's preprocessed dataset on ``node`` (rendering reads its poses and frames)."""
    copy = DatasetCopy.objects.filter(avatar=avatar, node=node, complete=True).first()
    if copy is None:
        raise ValueError(
            f"node {node.name} no longer holds the avatar's preprocessed dataset: train the avatar again"
        )
    return PurePosixPath(copy.path)


@dataclass(frozen=True)
class SpeechRender:
    """The node-side work that turns one WAV into an MP4 of the avatar saying it: one shell chain (step
    markers, poses, audio features, render, encode, ``[talkforge] done``) and what goes with it."""

    argv: list[str]  # ``sh -c`` the chain, not yet wrapped for the node's runtime
    cwd: str
    env: dict[str, str]
    parser: GenerationParser  # a fresh one: it follows one run of the chain
    scripts: tuple[tuple[Path, str], ...]  # our standard-library scripts to put on the node first
    result: PurePosixPath
    poster: PurePosixPath | None
    engine_video: str
    scratch: tuple[str, ...]  # the heavy files on the node, to remove once the result is back


def speech_render(
    *,
    job: Job,
    avatar: Avatar,
    checkpoint,
    dataset: PurePosixPath,
    folder: PurePosixPath,
    wav: PurePosixPath,
    seconds: float,
    batch: int = 128,
    pose_start: int = 0,
    poster: bool = True,
) -> SpeechRender:
    """The chain that renders ``wav`` (16 kHz mono PCM, already at that path on ``job``'s node, ``seconds``
    long) with ``checkpoint`` into ``folder``/video.mp4 (and poster.jpg when ``poster``), for both a
    video generation (one run) and a chat reply (one run per sentence, ``pose_start`` continuing the
    ping-pong poses where the previous sentence ended; SyncTalk plays its own poses and ignores it)."""
    result = folder / RESULT
    poster_path = folder / POSTER if poster else None
    steps = avatar.engine_plugin.speech_steps(
        job, checkpoint=checkpoint, dataset=dataset, folder=folder, wav=wav, frames=audio_frames(seconds),
        batch=batch, pose_start=pose_start,
    )  # fmt: skip
    chain, shares, engine_video = steps.chain, steps.shares, steps.engine_video
    encode = [web_video(source=engine_video, audio=str(wav), seconds=seconds, target=str(result))]
    if poster_path is not None:
        encode.append(poster_frame(source=str(result), target=str(poster_path)))
    encode += [["rm", "-rf", path] for path in steps.intermediate]  # the engine's own videos, once encoded
    total = len(chain) + 1
    commands_run = []
    for number, (name, command) in enumerate(chain, start=1):
        commands_run += [step(number, total, name), command]
    commands_run += [step(total, total, "encode"), *encode, ["echo", "[talkforge] done"]]
    outputs = [str(result)] + ([str(poster_path)] if poster_path is not None else [])
    return SpeechRender(
        argv=shell_and(*commands_run), cwd=steps.cwd, env=steps.env,
        parser=GenerationParser(steps=shares, engine=steps.parser, engine_step="render"),
        scripts=steps.scripts, result=result, poster=poster_path, engine_video=engine_video,
        scratch=(str(wav), str(wav.with_suffix(".npy")), *outputs, str(PurePosixPath(engine_video).parent)),
    )  # fmt: skip


SPEAKING = "speaking_the_text"  # the stage of the first step (its words: register_kind)


def speak_text(job: Job, context) -> None:
    """The job's first step, in the worker before the plan (KindSpec ``before_plan``, jobs/runner.py): a
    video from text is spoken here, not in the request that made it, so the web tier never loads a TTS
    model and the person's cloned voice speaks through the XTTS this worker process loaded once (chat
    registers its voices with videos/tts.py). The plan needs the speech's length for its frames, hence
    before it. A video from uploaded audio, or one already spoken (a retry), has nothing to do."""
    video = videos_visible_to(job.owner).get(pk=job.params["video"])
    if video.source != Video.Source.TEXT or video.audio:
        return
    context.log(
        f"Speaking the text ({len(video.text)} characters) in voice {video.voice}",
        stage=SPEAKING,
        progress=0.0,
    )
    started = time.monotonic()
    video = video_speak(video=video)
    context.log(
        f"Spoken by {video.spoken_by}: {video.audio_duration:.2f} s of audio "
        f"in {time.monotonic() - started:.1f} s"
    )


def generate_plan(job: Job) -> Plan:
    # Re-checked at run time: the video (and so its avatar and audio) is the job owner's.
    video = videos_visible_to(job.owner).get(pk=job.params["video"])
    avatar, checkpoint = video.avatar, video.checkpoint
    if checkpoint is None:
        raise ValueError("the chosen checkpoint was deleted: generate the video again with another one")
    folder = job_folder(job)
    wav = folder / "audio.wav"
    chain = speech_render(
        job=job, avatar=avatar, checkpoint=checkpoint, dataset=dataset_on(avatar, job.node), folder=folder,
        wav=wav, seconds=video.audio_duration, batch=video.batch_size,
    )  # fmt: skip
    result, poster = chain.result, chain.poster

    def verify(conn: NodeConnection) -> str | None:
        missing = [path.name for path in (result, poster) if not conn.exists(str(path))]
        if missing:
            return f"The generation ended without {' and '.join(missing)}: the log shows which step failed."
        return None

    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=chain.argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=chain.cwd, env=chain.env,
                        engine=video.avatar.engine),
        parser=chain.parser,
        outputs={"video": str(result), "poster": str(poster), "engine_video": chain.engine_video},
        uploads=(*chain.scripts, (video.audio, str(wav))),
        verify=verify,
        collect=((str(result), RESULT), (str(poster), POSTER)),
        # The heavy files go once the result is back; the small pose and model views (symlinks and one
        # transforms file) stay as a record of what drove the render.
        cleanup=chain.scratch,
    )  # fmt: skip


def clean_generate(params: dict, *, owner) -> dict:
    """A generation job carries its Video's id (one of the owner's); everything else is on the Video."""
    reject_unknown(params, {"video", "node"}, "a video generation")
    video = owned_id(
        params.get("video"), name="video", among=videos_visible_to(owner),
        refusal="Video {id} is not one of your videos; start one from /videos/new/.",
    )  # fmt: skip
    return {"video": video}


def after_generate(job: Job) -> None:
    video = video_record_result(job=job)
    if video is None or job.status == Job.Status.CANCELED:
        return
    url = reverse("video-detail", args=[video.pk])
    if video.error:
        notify(user=job.owner, subject=f"Video #{video.pk} failed", text=video.error, url=url, ok=False)
    else:
        text = f"{video.avatar.name}'s video ({video.result_duration or 0:.1f} s) is ready."
        notify(user=job.owner, subject=f"Video #{video.pk} is ready", text=text, url=url)


def video_subject(job: Job) -> tuple[str, str] | None:
    """The video a generation job makes, for the job's pages (None once it is deleted)."""
    video_id = job.params.get("video")
    if not Video.objects.filter(pk=video_id).exists():
        return None
    return f"Video #{video_id}", reverse("video-detail", args=[video_id])


def register_kind() -> None:
    register_stage_labels({SPEAKING: "Speaking the text (in the worker)"})
    register(
        GENERATE_VIDEO,
        KindSpec(label="Video generation", gpu_work="render", plan=generate_plan, before_plan=speak_text,
                 clean=clean_generate, after=after_generate, subject=video_subject),
    )  # fmt: skip
