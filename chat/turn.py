"""One reply, streamed: speech → Whisper → LLM (streamed) → sentences → speech per sentence → chunks.

The original prototype (docs/engines.md) ran each stage to its end before the next began. Here a producer
thread reads the LLM's stream and cuts it into sentences while this thread speaks each finished sentence at
once, so the first chunk exists while the model is still writing the rest. Every stage's time is stored with
the reply (``Message.TIMING_KEYS``, seconds from the start of the turn) and each step is announced through
``publish`` (the job's websocket group), so the page can show text as it arrives and play chunks in order.

Each spoken chunk is then rendered as video on the avatar's node (:func:`render_chunk`) by a renderer
thread fed in order (:class:`Videos`), so the speech of the next sentence is made while this one renders;
the turn ends when the last clip is back. A turn given no renderer (an untrained avatar) is spoken only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import connection

from avatars.media import engine_wav
from core import media
from core.errors import ServiceError
from videos.services import wav_seconds

from . import asr, llm, tts
from .models import Chunk, Conversation, Message
from .selectors import turn_answered_by
from .sentences import SentenceSplitter
from .services import conversation_llm_config, conversation_prompt, voice_latents_saved
from .video import RenderFailed, RenderStopped

logger = logging.getLogger(__name__)

Publish = Callable[[dict], None]


class TurnStopped(Exception):
    """The person pressed stop: the rest of the reply is not made."""


class TurnFailed(Exception):
    """The turn cannot go on; the message is for the person."""


@dataclass
class Clock:
    """Seconds since the turn began, recorded once per stage."""

    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, key: str, *, seconds: float | None = None) -> float:
        if key not in self.marks:
            self.marks[key] = round(seconds if seconds is not None else time.monotonic() - self.started, 3)
        return self.marks[key]


def render_chunk(
    *, chunk: Chunk, reply: Message, renderer, clock: Clock, publish: Publish, should_stop
) -> Chunk:
    """Render ``chunk`` (one sentence, its speech already in the media store) as a clip of the avatar on its
    node, its poses going on where the reply's previous clip ended (``reply.video_frames``); save the
    clip beside the speech and announce it (``chat.chunk_video``). Raises RenderFailed or RenderStopped.

    Called by the reply's renderer thread, one sentence after the other (the job holds one slot)."""
    video = PurePosixPath(chunk.audio).with_suffix(".mp4").as_posix()
    started = time.monotonic()
    with media.local_path(chunk.audio) as speech:
        wav = speech.with_name(f"{speech.stem}-16k.wav")  # what the engines' audio features read
        target = speech.with_suffix(".mp4")
        try:
            engine_wav(speech, wav)
        except ServiceError as error:
            raise RenderFailed(str(error)) from None
        seconds = wav_seconds(wav)
        pose_start, frames = reply.video_frames, renderer.frames(seconds)
        try:
            renderer.render(
                index=chunk.index, wav=wav, seconds=seconds, pose_start=pose_start, target=target,
                should_stop=should_stop,
            )  # fmt: skip
        finally:
            wav.unlink(missing_ok=True)
        media.save_file(target, video)
    render_seconds = round(time.monotonic() - started, 3)
    chunk.video, chunk.pose_start, chunk.video_frames = video, pose_start, frames
    chunk.timings = {
        **chunk.timings, "render": render_seconds, "video_ready": round(time.monotonic() - clock.started, 3)
    }  # fmt: skip
    chunk.save(update_fields=["video", "pose_start", "video_frames", "timings"])
    reply.video_frames = pose_start + frames
    Message.objects.filter(pk=reply.pk).update(video_frames=reply.video_frames)
    clock.mark("first_video_chunk")
    publish({
        "type": "chat.chunk_video", "message": reply.pk, "index": chunk.index, "chunk": chunk.pk,
        "url": f"/chat/media/chunk/{chunk.pk}/video/", "seconds": round(seconds, 3), "render": render_seconds,
        "pose_start": pose_start, "frames": frames, "at": chunk.timings["video_ready"],
    })  # fmt: skip
    return chunk


class Videos(threading.Thread):
    """The renderer thread: spoken chunks in (``put``), their clips made in order on the avatar's node, so
    the speech of sentence k+1 is made while sentence k renders. After a failed render the rest of the
    reply is spoken only (said once: ``chat.video`` off, from that sentence)."""

    def __init__(self, *, renderer, reply: Message, clock: Clock, publish: Publish, should_stop):
        super().__init__(name=f"chat-video-{reply.pk}", daemon=True)
        self.renderer, self.reply, self.clock, self.publish = renderer, reply, clock, publish
        self.halt = threading.Event()
        self._should_stop = should_stop
        self.items: queue.Queue = queue.Queue()
        self.stopped = False

    def should_stop(self) -> bool:
        return self.halt.is_set() or self._should_stop()

    def put(self, chunk: Chunk) -> None:
        self.items.put(chunk)

    def close(self) -> None:
        """No more chunks: the thread ends once the queued ones are rendered."""
        self.items.put(_END)

    def run(self) -> None:
        try:
            while (chunk := self.items.get()) is not _END:
                if self.reply.video_note or self.should_stop():
                    continue  # video is off for the rest of the reply, or the turn is ending
                try:
                    render_chunk(chunk=chunk, reply=self.reply, renderer=self.renderer, clock=self.clock,
                                 publish=self.publish, should_stop=self.should_stop)  # fmt: skip
                except RenderStopped:
                    self.stopped = True
                except Exception as error:
                    if not isinstance(error, RenderFailed):
                        logger.exception(
                            "rendering sentence %s of reply %s failed", chunk.index, self.reply.pk
                        )
                    self.reply.video_note = (
                        f"Sentence {chunk.index + 1} could not be rendered, so the rest of the reply is only "
                        f"spoken: {error}"
                    )[:2000]
                    self.publish({"type": "chat.video", "message": self.reply.pk, "on": False,
                                  "from": chunk.index, "note": self.reply.video_note})  # fmt: skip
        finally:
            connection.close()  # this thread's own database connection

    def finish(self) -> None:
        """Stop now: kill a running render and wait for the thread (nothing is left on the node)."""
        self.halt.set()
        self.close()
        self.join(timeout=30)


def _speaker(conversation: Conversation) -> tuple[Path | None, Path | None]:
    voice = conversation.voice
    if voice is None:
        return None, None
    reference = media.cached_copy(voice.reference)
    return reference, reference.parent


def _transcribe(
    user: Message, reply: Message, conversation: Conversation, clock: Clock, publish: Publish
) -> None:
    """Fill in the text of a spoken turn (and its language when the conversation does not set one)."""
    if user.text or not user.audio:
        return
    publish({"type": "chat.stage", "stage": "asr", "reply": reply.pk})
    try:
        with media.local_path(user.audio) as recording:
            transcript = asr.transcribe(recording, language=conversation.language or None)
    except asr.ASRError as error:
        raise TurnFailed(str(error)) from None
    user.text = transcript.text
    user.language = transcript.language
    user.timings = {**user.timings, "asr": round(transcript.seconds, 3)}
    user.save(update_fields=["text", "language", "timings"])
    clock.mark("asr")
    publish({"type": "chat.transcript", "message": user.pk, "reply": reply.pk, "text": user.text,
             "language": user.language})  # fmt: skip
    if not user.text:
        raise TurnFailed("Nothing was understood in the recording: speak closer to the microphone and again.")


_END = object()


def _stream_sentences(
    *,
    messages: list[dict],
    config: llm.LLMConfig,
    out: queue.Queue,
    stop: threading.Event,
    clock: Clock,
    publish: Publish,
    reply_pk: int,
    first_min_chars: int,
) -> None:
    """Producer thread: LLM tokens → sentences into ``out``; then ``_END``, or the LLMError that ended it.
    ``first_min_chars``: the first piece may end at a clause mark (chat.sentences; 0: whole sentences)."""
    splitter = SentenceSplitter(min_chars=settings.CHAT_SENTENCE_MIN_CHARS, first_min_chars=first_min_chars)
    stream = llm.stream_chat(messages, config=config)
    try:
        for piece in stream:
            clock.mark("llm_first_token")
            publish({"type": "chat.token", "text": piece, "reply": reply_pk})
            for sentence in splitter.feed(piece):
                clock.mark("first_sentence")
                out.put(sentence)
            if stop.is_set():
                return
        for sentence in splitter.flush():
            clock.mark("first_sentence")
            out.put(sentence)
    except llm.LLMError as error:
        out.put(error)
    except Exception as error:  # never leave the consumer waiting forever
        logger.exception("the LLM stream failed")
        out.put(error)
    finally:
        stream.close()  # on a stop, hang up on the LLM instead of reading the rest
        out.put(_END)


def reply_run(
    *,
    reply: Message,
    publish: Publish = lambda event: None,
    should_stop: Callable[[], bool] = lambda: False,
    renderer=None,
) -> Message:
    """Make the assistant message ``reply`` (pending, in its conversation, after the person's turn).

    Returns it done, failed (with ``error`` for the person) or canceled (with the chunks made before the
    stop). ``should_stop`` is asked between sentences, while waiting for the LLM and during each render.
    ``renderer`` (chat.video.NodeRenderer) renders each sentence; without one the reply is spoken only,
    and ``reply.video_note`` says why (once, in ``chat.video``)."""
    conversation = Conversation.objects.select_related("voice", "avatar").get(pk=reply.conversation_id)
    user = turn_answered_by(reply)
    clock = Clock()
    reply.status = Message.Status.RUNNING
    reply.save(update_fields=["status"])
    stop = threading.Event()
    texts: list[str] = []
    videos = None
    stack = ExitStack()  # the reply's local folder (core/media.py workspace), closed when the turn ends
    publish({"type": "chat.video", "message": reply.pk, "on": renderer is not None, "from": 0,
             "note": reply.video_note})  # fmt: skip
    try:
        if user is None:
            raise TurnFailed("There is nothing to reply to: send a message first.")
        _transcribe(user, reply, conversation, clock, publish)
        language = conversation.language or user.language or "en"
        reply.language = language
        messages = conversation_prompt(conversation)
        sentences: queue.Queue = queue.Queue()
        # A quick first piece where nothing waits on a cold render after it: spoken only, or a live session.
        quick_first = renderer is None or renderer.streams
        first_min_chars = settings.CHAT_FIRST_FRAGMENT_MIN_CHARS if quick_first else 0
        producer = threading.Thread(
            target=_stream_sentences,
            kwargs={"messages": messages, "config": conversation_llm_config(conversation), "out": sentences,
                    "stop": stop, "clock": clock, "publish": publish, "reply_pk": reply.pk,
                    "first_min_chars": first_min_chars},
            name=f"chat-llm-{reply.pk}", daemon=True,
        )  # fmt: skip
        publish({"type": "chat.stage", "stage": "llm", "reply": reply.pk})
        producer.start()
        folder = f"{conversation.folder}/{reply.pk}"
        workspace = stack.enter_context(media.workspace(folder))
        reference, voice_folder = _speaker(conversation)
        if renderer is not None:
            if hasattr(renderer, "clock"):
                renderer.clock = clock  # a live renderer marks first_frame_rendered on the turn's clock
            videos = Videos(
                renderer=renderer, reply=reply, clock=clock, publish=publish, should_stop=should_stop
            )
            videos.start()
        while True:
            try:
                item = sentences.get(timeout=0.2)
            except queue.Empty:
                if should_stop():
                    raise TurnStopped() from None
                continue
            if item is _END:
                break
            if isinstance(item, Exception):
                raise TurnFailed(str(item) if isinstance(item, llm.LLMError) else f"The reply failed: {item}")
            if should_stop():
                raise TurnStopped()
            texts.append(item)
            chunk = _speak_chunk(
                reply=reply, conversation=conversation, index=len(texts) - 1, text=item, language=language,
                folder=folder, workspace=workspace, reference=reference, voice_folder=voice_folder,
                clock=clock, publish=publish,
            )  # fmt: skip
            if videos is not None:
                videos.put(chunk)
        if not texts:
            raise TurnFailed("The LLM answered with nothing: try again or rephrase.")
        if videos is not None:
            videos.close()
            while videos.is_alive():  # the last clips are still rendering
                videos.join(timeout=0.2)
                if should_stop():
                    raise TurnStopped()
            if videos.stopped:
                raise TurnStopped()
        reply.status = Message.Status.DONE
    except TurnStopped:
        reply.status = Message.Status.CANCELED
        reply.error = "Stopped by request."
    except (TurnFailed, tts.TTSError, ServiceError) as error:
        reply.status = Message.Status.FAILED
        reply.error = str(error)
    except Exception as error:
        reply.status = Message.Status.FAILED
        reply.error = f"Internal error while replying: {type(error).__name__}: {error}"
        raise
    finally:
        stop.set()
        if videos is not None:
            videos.finish()  # a stop or failure kills the render running on the node, and waits for it
        stack.close()
        clock.mark("whole_reply")
        reply.text = " ".join(texts)
        # What the browser stored meanwhile (first_frame_played, chat.services.reply_played) stays.
        stored = Message.objects.filter(pk=reply.pk).values_list("timings", flat=True).first() or {}
        reply.timings = {**reply.timings, **stored, **clock.marks}
        reply.save(
            update_fields=["status", "error", "text", "timings", "language", "voice_engine", "voice_note",
                           "video_note", "video_frames"]
        )  # fmt: skip
    publish({"type": "chat.reply", "message": reply.pk, "status": reply.status, "error": reply.error,
             "text": reply.text, "timings": reply.timings})  # fmt: skip
    return reply


def _speak_chunk(
    *,
    reply: Message,
    conversation: Conversation,
    index: int,
    text: str,
    language: str,
    folder: str,
    workspace: Path,
    reference: Path | None,
    voice_folder: Path | None,
    clock: Clock,
    publish: Publish,
) -> Chunk:
    audio = f"{folder}/chunk-{index:03d}.wav"
    speech_file = workspace / f"chunk-{index:03d}.wav"
    speech = tts.synthesize(
        text, language=language, out=speech_file, reference=reference, voice_folder=voice_folder
    )
    media.save_file(speech_file, audio)
    clock.mark("tts_first_audio")
    voice = conversation.voice
    if speech.engine == tts.ENGINE_XTTS and reference is not None and voice is not None:
        latents = tts.latents_path(voice_folder, tts.get_xtts())
        relative = f"{voice.folder}/{latents.name}"
        if voice.latents != relative:
            media.save_file(latents, relative)  # kept with the voice, and erased with it
            voice_latents_saved(voice=voice, relative=relative)
    if not reply.voice_engine:
        reply.voice_engine, reply.voice_note = speech.engine, speech.note[:300]
    chunk = Chunk.objects.create(
        message=reply, index=index, text=text, audio=audio, audio_seconds=round(speech.seconds, 3),
        timings={
            "tts": round(speech.synthesis_seconds, 3), "ready": round(time.monotonic() - clock.started, 3),
        },
    )  # fmt: skip
    publish({
        "type": "chat.chunk", "message": reply.pk, "index": index, "text": text, "chunk": chunk.pk,
        "audio_seconds": chunk.audio_seconds, "voice_engine": speech.engine, "voice_note": speech.note,
        "ready": chunk.timings["ready"],
    })  # fmt: skip
    return chunk
