"""Video generation: the driving audio checked and converted, the job submitted; its result recorded."""

from __future__ import annotations

import logging
import secrets
import wave
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from accounts.quotas import quota_check_storage
from avatars.media import engine_wav, probe, probe_audio
from avatars.models import Avatar, Checkpoint
from avatars.runs import default_checkpoint, render_blocker
from avatars.uploads import rollback, storing
from core import media
from core.errors import ServiceError
from core.params import RENDER_BATCH
from jobs.models import Job
from jobs.services import job_cancel, job_submit

from . import tts
from .models import Video

RESULT, POSTER = "video.mp4", "poster.jpg"  # the files a generation job collects
GENERATE_VIDEO = "generate_video"  # the kind of job that renders a video (videos/job_kind.py registers it)

logger = logging.getLogger(__name__)

AUDIO_FORMATS = "WAV, MP3, M4A, OGG, FLAC or WebM"


def _check_checkpoint(avatar: Avatar, checkpoint: Checkpoint | None) -> Checkpoint:
    if checkpoint is None:
        checkpoint = default_checkpoint(avatar)
        if checkpoint is None:
            raise ServiceError(
                f"Avatar {avatar.name} has no checkpoint that can render a video: train it again."
            )
    elif checkpoint.avatar_id != avatar.pk:
        raise ServiceError(
            f"That checkpoint belongs to another avatar, not to {avatar.name}: choose one of its own "
            "checkpoints (or leave the choice empty for the latest)."
        )
    if problem := avatar.engine_plugin.render_refusal(checkpoint):
        raise ServiceError(problem)
    node, blocker = checkpoint.node, render_blocker(checkpoint)
    if blocker == "disabled":
        raise ServiceError(
            f"Node {node.name}, which holds this avatar's model, is disabled: ask an administrator to enable "
            "it, or train the avatar on another node."
        )
    if blocker == "no dataset":
        raise ServiceError(
            f"Node {node.name} holds the checkpoint but not the avatar's preprocessed dataset, which "
            "rendering needs: train the avatar again on that node."
        )
    return checkpoint


def _check_length(seconds: float, what: str) -> None:
    low, high = settings.VIDEO_MIN_AUDIO_SECONDS, settings.VIDEO_MAX_AUDIO_SECONDS
    if seconds < low:
        raise ServiceError(f"{what} is {seconds:.2f} s long; at least {low:g} s are needed.")
    if seconds > high:
        raise ServiceError(
            f"{what} is {seconds / 60:.1f} minutes long; the limit is {high / 60:g} minutes "
            f"({high:g} s). Split it into shorter parts and make one video of each."
        )


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def video_create(
    *,
    owner,
    avatar: Avatar,
    audio: UploadedFile | None = None,
    text: str | None = None,
    voice: str = tts.OFFLINE,
    checkpoint: Checkpoint | None = None,
    batch_size: int | str | None = None,
) -> Video:
    """Check and convert the driving audio (or check the text and its voice: the job speaks it, see
    :func:`video_speak`), record the video and submit its job on the node that holds the model. On any
    error nothing is left behind: no row, no job, no files."""
    if avatar.owner_id != owner.pk:
        raise ServiceError("No such avatar.")  # the views answer 404 before this
    has_text = text is not None and text != ""
    if audio is not None and has_text:
        raise ServiceError("Give either an audio file or a text to speak, not both.")
    if audio is None and not has_text:
        raise ServiceError(f"Upload an audio file ({AUDIO_FORMATS}) or type a text for the avatar to speak.")
    quota_check_storage(owner=owner, adding_bytes=audio.size if audio is not None else 0)
    if audio is None:
        text = text.strip()
        if not text:
            raise ServiceError("The text is empty: type what the avatar should say.")
        if len(text) > settings.VIDEO_MAX_TEXT_CHARS:
            raise ServiceError(
                f"The text has {len(text)} characters; the limit is {settings.VIDEO_MAX_TEXT_CHARS}. "
                "Shorten it or make several videos."
            )
        tts.voice_check(owner=owner, voice=voice)
    if avatar.status != Avatar.Status.TRAINED:
        raise ServiceError(
            f"Avatar {avatar.name} is not trained yet ({avatar.get_status_display().lower()}): train it, "
            "then generate videos."
        )
    batch = RENDER_BATCH.clean(batch_size)
    checkpoint = _check_checkpoint(avatar, checkpoint)

    token = secrets.token_hex(8)
    relative = f"videos/{token}"
    with rollback(relative):
        seconds = None
        if audio is not None:
            with storing(audio, f"{relative}/audio.wav") as incoming:
                _check_length(probe_audio(incoming.source).duration, "The audio")
                engine_wav(incoming.source, incoming.target)
                seconds = wav_seconds(incoming.target)
                _check_length(seconds, "The audio")  # the exact length, from the converted file
        # A text is not spoken here: the web tier loads no TTS model and a request does not wait for
        # synthesis. The job's worker speaks it first (video_speak), where chat's XTTS is already loaded.
        with transaction.atomic():
            video = Video.objects.create(
                owner=owner,
                avatar=avatar,
                checkpoint=checkpoint,
                source=Video.Source.AUDIO if audio is not None else Video.Source.TEXT,
                text=text if audio is None else "",
                voice=voice if audio is None else "",
                original_name=(audio.name or "")[:255] if audio is not None else "",
                folder=relative,
                audio=f"{relative}/audio.wav" if audio is not None else "",
                audio_duration=seconds,
                batch_size=batch,
                pose_mode=(
                    Video.PoseMode.ENGINE
                    if avatar.engine_plugin.plays_own_poses
                    else Video.PoseMode.PING_PONG
                ),
            )
            video.job = job_submit(
                owner=owner,
                kind=GENERATE_VIDEO,
                params={"video": video.pk},
                node=checkpoint.node,
                avatar=avatar,
            )
            video.save(update_fields=["job"])
        return video


def video_speak(*, video: Video) -> Video:
    """Speak a video's text in its chosen voice (videos/tts.py ``speak``: a cloned voice through the
    speakers registry, i.e. XTTS in the worker that runs the video's job), convert it to the engine's WAV
    and store it in the video's folder; fill its audio, length and who spoke. Already spoken (a job run
    again after a retry): nothing to do. ServiceError when the voice is no longer the owner's, when nothing
    could speak, or when the speech breaks the length limits.

    The length limits (VIDEO_MIN/MAX_AUDIO_SECONDS) are checked here, after synthesis, on the real
    audio, not estimated from the text in the request: how long a text takes to say depends on the voice,
    its language and the speaker's pace, so an estimate would refuse texts that fit or admit ones that do
    not. The request still bounds the text (VIDEO_MAX_TEXT_CHARS); speech that breaks a limit fails the
    job with the message the request gives for an uploaded file. The storage quota stays the request's
    check, as before this moved here (a text's WAV was not counted then either)."""
    if video.source != Video.Source.TEXT or video.audio:
        return video
    relative = f"{video.folder}/audio.wav"
    with rollback(relative), storing(None, relative) as incoming:
        source = incoming.scratch / "speech.wav"
        spoken_by = tts.speak(owner=video.owner, text=video.text, voice=video.voice, target=source)
        _check_length(probe_audio(source).duration, "The spoken text")
        engine_wav(source, incoming.target)
        seconds = wav_seconds(incoming.target)
        _check_length(seconds, "The spoken text")
    spoken = {"audio": relative, "audio_duration": seconds, "spoken_by": spoken_by[:300]}
    if not Video.objects.filter(pk=video.pk).update(**spoken):
        media.delete(relative)  # deleted while it was spoken (its folder went then): keep nothing
        raise Video.DoesNotExist(f"Video {video.pk} was deleted while its text was spoken.")
    for field, value in spoken.items():
        setattr(video, field, value)
    return video


def video_record_result(*, job: Job) -> Video | None:
    """Once the job has ended: the result's paths and length, or the error."""
    video = Video.objects.filter(job=job).first()
    if video is None:
        return None  # deleted meanwhile
    if job.status != Job.Status.SUCCEEDED:
        video.error = job.error or f"The generation was {job.status}."
        video.save(update_fields=["error"])
        return video
    files = job.result.get("files", {})
    video.result, video.poster = files.get(RESULT, ""), files.get(POSTER, "")
    try:
        with media.local_path(video.result) as path:
            video.result_duration = probe(path).duration
    except ServiceError as error:
        video.error = f"The generated video cannot be read: {error}"
    video.save(update_fields=["result", "poster", "result_duration", "error"])
    return video


def videos_collect_erasure(user, erasure) -> None:
    """Deleting an account (accounts/deletion.py): the person's videos' folders (gpu_nodes Erasure)."""
    for video in user.videos.all():
        erasure.add_media(video.folder if video.folder.startswith("videos/") else "")


def video_delete(*, video: Video) -> None:
    """The video, its files and (if it still runs) its job, which is canceled on the node."""
    job = video.job
    if job is not None and job.is_active:
        job_cancel(job=job)
    video.delete()  # its files go with it (signals.py), whoever deletes it
