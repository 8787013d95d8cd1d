"""One reply, streamed: speech → Whisper → LLM (streamed) → sentences → speech per sentence → chunks.

The seed ran each stage to its end before the next began. Here a producer thread reads the LLM's stream
and cuts it into sentences while this thread speaks each finished sentence at once, so the first chunk
exists while the model is still writing the rest. Every stage's time is stored with the reply
(``Message.TIMING_KEYS``, seconds from the start of the turn) and each step is announced through
``publish`` (the job's websocket group), so the page can show text as it arrives and play chunks in order.

Rendering a chunk on the avatar's node is :func:`render_chunk`; it is not called yet (see there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from talkforge.errors import ServiceError

from . import asr, llm, tts
from .models import Chunk, Conversation, Message
from .sentences import SentenceSplitter
from .services import conversation_llm_config, conversation_prompt, voice_latents_saved

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


def _media(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def _relative(path: Path) -> str:
    return path.relative_to(settings.MEDIA_ROOT).as_posix()


def warm_up() -> None:
    """Load the speech models now (a chat worker calls this when it starts), so the first turn does not
    wait for them. Whisper always; XTTS when its weights are configured."""
    asr.get_model()
    if not tts.xtts_missing():
        tts.get_xtts()


def render_chunk(*, chunk: Chunk, conversation: Conversation, audio: Path) -> Path:
    """The seam for video: render ``audio`` (one sentence's speech) as a clip of the conversation's avatar
    on the node that holds its model, and return the clip here.

    Not called yet. It will reuse the ``videos`` app's generation (pose view, audio features, render.py,
    web encode: ``videos/job_kind.py``) per sentence, on the connection to the avatar's node, and the turn
    will call it for each chunk right after its speech exists (marking ``first_video_chunk``)."""
    raise NotImplementedError("rendering reply chunks waits for the videos app's render (issue 6)")


def _speaker(conversation: Conversation) -> tuple[Path | None, Path | None]:
    voice = conversation.voice
    if voice is None:
        return None, None
    reference = _media(voice.reference)
    return reference, reference.parent


def _transcribe(user: Message, conversation: Conversation, clock: Clock, publish: Publish) -> None:
    """Fill in the text of a spoken turn (and its language when the conversation does not set one)."""
    if user.text or not user.audio:
        return
    publish({"type": "chat.stage", "stage": "asr"})
    try:
        transcript = asr.transcribe(_media(user.audio), language=conversation.language or None)
    except asr.ASRError as error:
        raise TurnFailed(str(error)) from None
    user.text = transcript.text
    user.language = transcript.language
    user.timings = {**user.timings, "asr": round(transcript.seconds, 3)}
    user.save(update_fields=["text", "language", "timings"])
    clock.mark("asr")
    publish({"type": "chat.transcript", "message": user.pk, "text": user.text, "language": user.language})
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
) -> None:
    """Producer thread: LLM tokens → sentences into ``out``; then ``_END``, or the LLMError that ended it."""
    splitter = SentenceSplitter(min_chars=settings.CHAT_SENTENCE_MIN_CHARS)
    stream = llm.stream_chat(messages, config=config)
    try:
        for piece in stream:
            clock.mark("llm_first_token")
            publish({"type": "chat.token", "text": piece})
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
) -> Message:
    """Make the assistant message ``reply`` (pending, in its conversation, after the person's turn).

    Returns it done, failed (with ``error`` for the person) or canceled (with the chunks made before the
    stop). ``should_stop`` is asked between sentences and while waiting for the LLM."""
    conversation = Conversation.objects.select_related("voice", "avatar").get(pk=reply.conversation_id)
    user = conversation.messages.filter(role=Message.Role.USER, created_at__lte=reply.created_at).last()
    clock = Clock()
    reply.status = Message.Status.RUNNING
    reply.save(update_fields=["status"])
    stop = threading.Event()
    texts: list[str] = []
    try:
        if user is None:
            raise TurnFailed("There is nothing to reply to: send a message first.")
        _transcribe(user, conversation, clock, publish)
        language = conversation.language or user.language or "en"
        reply.language = language
        messages = conversation_prompt(conversation)
        sentences: queue.Queue = queue.Queue()
        producer = threading.Thread(
            target=_stream_sentences,
            kwargs={"messages": messages, "config": conversation_llm_config(conversation), "out": sentences,
                    "stop": stop, "clock": clock, "publish": publish},
            name=f"chat-llm-{reply.pk}", daemon=True,
        )  # fmt: skip
        publish({"type": "chat.stage", "stage": "llm"})
        producer.start()
        folder = _media(conversation.folder) / str(reply.pk)
        folder.mkdir(parents=True, exist_ok=True)
        reference, voice_folder = _speaker(conversation)
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
            _speak_chunk(
                reply=reply, conversation=conversation, index=len(texts) - 1, text=item, language=language,
                folder=folder, reference=reference, voice_folder=voice_folder, clock=clock, publish=publish,
            )  # fmt: skip
        if not texts:
            raise TurnFailed("The LLM answered with nothing: try again or rephrase.")
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
        clock.mark("whole_reply")
        reply.text = " ".join(texts)
        reply.timings = {**reply.timings, **clock.marks}
        reply.save(
            update_fields=["status", "error", "text", "timings", "language", "voice_engine", "voice_note"]
        )
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
    folder: Path,
    reference: Path | None,
    voice_folder: Path | None,
    clock: Clock,
    publish: Publish,
) -> Chunk:
    audio = folder / f"chunk-{index:03d}.wav"
    speech = tts.synthesize(
        text, language=language, out=audio, reference=reference, voice_folder=voice_folder
    )
    clock.mark("tts_first_audio")
    if speech.engine == tts.ENGINE_XTTS and reference is not None:
        latents = tts.latents_path(voice_folder, tts.get_xtts())
        voice = conversation.voice
        if voice is not None and voice.latents != _relative(latents):
            voice_latents_saved(voice=voice, path=latents)
    if not reply.voice_engine:
        reply.voice_engine, reply.voice_note = speech.engine, speech.note[:300]
    chunk = Chunk.objects.create(
        message=reply, index=index, text=text, audio=_relative(audio), audio_seconds=round(speech.seconds, 3),
        timings={
            "tts": round(speech.synthesis_seconds, 3), "ready": round(time.monotonic() - clock.started, 3),
        },
    )  # fmt: skip
    publish({
        "type": "chat.chunk", "message": reply.pk, "index": index, "text": text, "chunk": chunk.pk,
        "audio_seconds": chunk.audio_seconds, "voice_engine": speech.engine, "voice_note": speech.note,
    })  # fmt: skip
    return chunk
