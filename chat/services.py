"""Voices and conversations: creation from validated input, settings, and what the LLM is sent."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from accounts.quotas import quota_check_storage
from avatars.media import probe_audio, to_wav
from avatars.selectors import avatars_visible_to
from avatars.uploads import rollback, storing, unique_slug
from core import media
from core.errors import ServiceError
from gpu_nodes import secrets as secret_box
from gpu_nodes.erasure import Erasure

from . import llm
from .audio import SPEECH_SAMPLE_RATE, VOICE_SAMPLE_RATE
from .models import Conversation, Language, Message, Voice
from .selectors import turn_answered_by, voices_visible_to

if TYPE_CHECKING:
    from avatars.models import Checkpoint

logger = logging.getLogger(__name__)

CHAT_REPLY = "chat_reply"  # the kind of job that makes a reply (chat/job_kind.py registers it)

VOICE_CONSENT_STATEMENT = (
    "The person speaking in this recording has agreed that their voice is cloned on Talkforge to speak "
    "new sentences, and I may upload it on their behalf."
)


def _check_language(language: str, *, blank_ok: bool) -> str:
    language = (language or "").strip()
    if blank_ok and not language:
        return ""
    if language not in Language.values:
        raise ServiceError(f"Unknown language {language!r}: choose one of {', '.join(Language.values)}.")
    return language


def voice_create(
    *, owner, name: str, recording: UploadedFile, consent: bool, language: str = Language.EN
) -> Voice:
    """Validate a reference recording (an audio stream of CHAT_VOICE_MIN_SECONDS to CHAT_VOICE_MAX_SECONDS),
    store it as 22.05 kHz mono WAV and make the voice. On any error nothing is left behind."""
    name = (name or "").strip()
    if not consent:
        raise ServiceError("Confirm that the person in the recording agreed to have their voice cloned.")
    if not name or len(name) > 100:
        raise ServiceError("Give the voice a name of 1 to 100 characters.")
    language = _check_language(language, blank_ok=False)
    if Voice.objects.filter(owner=owner, name=name).exists():
        raise ServiceError(f"You already have a voice named {name!r}: choose another name.")
    quota_check_storage(owner=owner, adding_bytes=recording.size)

    slug = unique_slug(name, "voice")
    folder = f"voices/{slug}"
    with rollback(folder, taken=f"You already have a voice named {name!r}: choose another name."):
        with storing(recording, f"{folder}/reference.wav") as incoming:
            source, target = incoming.source, incoming.target
            info = probe_audio(source)
            low, high = settings.CHAT_VOICE_MIN_SECONDS, settings.CHAT_VOICE_MAX_SECONDS
            if info.duration < low:
                raise ServiceError(
                    f"The recording is {info.duration:.1f} s long; a voice needs at least {low:.0f} s of "
                    "clear speech (10–30 s clone best)."
                )
            if info.duration > high:
                raise ServiceError(
                    f"The recording is {info.duration:.0f} s long; the limit is {high:.0f} s. Trim it to "
                    "its clearest part."
                )
            to_wav(source, target, sample_rate=VOICE_SAMPLE_RATE)
        with transaction.atomic():
            return Voice.objects.create(
                owner=owner,
                name=name,
                slug=slug,
                language=language,
                reference=f"voices/{slug}/reference.wav",
                reference_info={
                    "duration": info.duration,
                    "source_codec": info.codec,
                    "source_sample_rate": info.sample_rate,
                    "source_channels": info.channels,
                    "sample_rate": VOICE_SAMPLE_RATE,
                },
                consent_given_at=timezone.now(),
                consent_given_by=owner,
                consent_statement=VOICE_CONSENT_STATEMENT,
            )


def voice_latents_saved(*, voice: Voice, relative: str) -> None:
    """Record where the voice's XTTS latents were stored (chat.tts writes them beside the reference)."""
    Voice.objects.filter(pk=voice.pk).update(latents=relative)
    voice.latents = relative


def voice_erasure(voice: Voice, erasure: Erasure) -> None:
    """Add the voice's files to ``erasure``: its folder, which holds the reference recording and the XTTS
    speaker latents cached from it (chat/tts.py latents_path), and the latents file it recorded."""
    erasure.add_media(voice.folder)
    erasure.add_media(voice.reference)
    erasure.add_media(voice.latents)


def chat_collect_erasure(user, erasure: Erasure) -> None:
    """Deleting an account (accounts/deletion.py): the person's voices and conversations' folders."""
    for voice in user.voices.all():
        voice_erasure(voice, erasure)
    for conversation in user.conversations.all():
        erasure.add_media(conversation.folder)


def voice_delete(*, voice: Voice) -> None:
    """Delete the voice with its recording and cached latents. Conversations that spoke in it fall back to
    the offline voice (the foreign key is SET_NULL). Refused while a reply is being spoken in it: that
    reply reads the recording sentence by sentence."""
    from jobs.models import Job

    if Message.objects.filter(conversation__voice=voice, job__status__in=Job.ACTIVE_STATUSES).exists():
        raise ServiceError(
            "A reply is being spoken in this voice: wait for it or stop it, then delete the voice."
        )
    erasure = Erasure(what=f"voice {voice.slug} (#{voice.pk})", by=voice.owner.username)
    voice_erasure(voice, erasure)
    voice.delete()
    erasure.carry_out()


def _own_voice(owner, voice: Voice | int | None) -> Voice | None:
    if voice is None or voice == "":
        return None
    voice_id = voice.pk if isinstance(voice, Voice) else voice
    found = voices_visible_to(owner).filter(pk=voice_id).first()
    if found is None:
        raise ServiceError(f"You have no voice with id {voice_id}.")
    return found


def _clean_llm_fields(*, llm_base_url: str, llm_model: str, system_prompt: str) -> dict:
    base_url = (llm_base_url or "").strip()
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ServiceError(f"The LLM base URL {base_url!r} must start with http:// or https://.")
    return {
        "llm_base_url": base_url,
        "llm_model": (llm_model or "").strip()[:100],
        "system_prompt": (system_prompt or "").strip(),
    }


def _check_system_prompt(system_prompt: str) -> None:
    """The system prompt goes with every turn: CHAT_SYSTEM_PROMPT_MAX_CHARS bounds what that costs."""
    limit = settings.CHAT_SYSTEM_PROMPT_MAX_CHARS
    if len(system_prompt) > limit:
        raise ServiceError(
            f"The system prompt is {len(system_prompt)} characters long; the limit is {limit} characters. "
            "Shorten it: it is sent with every turn."
        )


def _check_own_endpoint(*, base_url: str, has_own_key: bool) -> None:
    """A conversation's own LLM endpoint must be allowed, public, and come with its own key (see
    chat.llm.check_own_endpoint); the same check runs again before every call."""
    if not base_url:
        return
    try:
        llm.check_own_endpoint(base_url, has_own_key=has_own_key, resolve=True)
    except llm.LLMError as error:
        raise ServiceError(str(error)) from None


@transaction.atomic
def conversation_create(
    *,
    owner,
    avatar,
    voice: Voice | int | None = None,
    language: str = "",
    title: str = "",
    system_prompt: str = "",
    llm_base_url: str = "",
    llm_model: str = "",
    llm_api_key: str = "",
) -> Conversation:
    """A conversation with one of the owner's avatars, in one of their voices (or the offline voice)."""
    avatar_id = getattr(avatar, "pk", avatar)
    own_avatar = avatars_visible_to(owner).filter(pk=avatar_id).first()
    if own_avatar is None:
        raise ServiceError(f"You have no avatar with id {avatar_id}.")
    api_key = (llm_api_key or "").strip()
    fields = _clean_llm_fields(llm_base_url=llm_base_url, llm_model=llm_model, system_prompt=system_prompt)
    _check_system_prompt(fields["system_prompt"])
    _check_own_endpoint(base_url=fields["llm_base_url"], has_own_key=bool(api_key))
    return Conversation.objects.create(
        owner=owner,
        avatar=own_avatar,
        voice=_own_voice(owner, voice),
        language=_check_language(language, blank_ok=True),
        title=(title or "").strip()[:200],
        llm_api_key_encrypted=secret_box.encrypt(api_key),
        **fields,
    )


UNCHANGED = object()


@transaction.atomic
def conversation_update(
    *,
    conversation: Conversation,
    voice=UNCHANGED,
    language=UNCHANGED,
    title=UNCHANGED,
    system_prompt=UNCHANGED,
    llm_base_url=UNCHANGED,
    llm_model=UNCHANGED,
    llm_api_key=UNCHANGED,
) -> Conversation:
    """Change what is given; the API key is write-only: a new one replaces it, "" removes it.

    The system prompt and the endpoint are checked when they change, so a conversation saved under older
    limits can still be renamed (its replies are checked again anyway)."""
    owner = conversation.owner
    if voice is not UNCHANGED:
        conversation.voice = _own_voice(owner, voice)
    if language is not UNCHANGED:
        conversation.language = _check_language(language, blank_ok=True)
    if title is not UNCHANGED:
        conversation.title = (title or "").strip()[:200]
    current = {
        "llm_base_url": conversation.llm_base_url,
        "llm_model": conversation.llm_model,
        "system_prompt": conversation.system_prompt,
    }
    given = {"llm_base_url": llm_base_url, "llm_model": llm_model, "system_prompt": system_prompt}
    current.update({key: value for key, value in given.items() if value is not UNCHANGED})
    cleaned = _clean_llm_fields(**current)
    if cleaned["system_prompt"] != conversation.system_prompt:
        _check_system_prompt(cleaned["system_prompt"])
    api_key = UNCHANGED if llm_api_key is UNCHANGED else (llm_api_key or "").strip()
    if cleaned["llm_base_url"] != conversation.llm_base_url or api_key is not UNCHANGED:
        has_own_key = conversation.has_own_api_key if api_key is UNCHANGED else bool(api_key)
        _check_own_endpoint(base_url=cleaned["llm_base_url"], has_own_key=has_own_key)
    for key, value in cleaned.items():
        setattr(conversation, key, value)
    if api_key is not UNCHANGED:
        conversation.llm_api_key_encrypted = secret_box.encrypt(api_key)
    conversation.save()
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    from .live import live_sessions_end_for_checkpoints

    folder, avatar = conversation.folder, conversation.avatar
    conversation.delete()
    media.delete(folder)
    if not Conversation.objects.filter(avatar=avatar).exists():
        # Its live session is no one else's: end it now rather than when it idles out.
        live_sessions_end_for_checkpoints(
            avatar.checkpoints.values_list("pk", flat=True), reason="Its conversation was deleted."
        )


def conversation_llm_config(conversation: Conversation) -> llm.LLMConfig:
    """The endpoint, model and key this conversation's replies use (its own where set)."""
    try:
        api_key = secret_box.decrypt(conversation.llm_api_key_encrypted)
    except secret_box.SecretUnreadable:
        logger.warning(
            "Conversation #%s: its API key cannot be decrypted (NODE_SECRETS_KEY or SECRET_KEY changed).",
            conversation.pk,
        )
        raise ServiceError(
            "The conversation's API key can no longer be read (the platform's keys changed since it was "
            "saved). Enter the key again in the conversation's settings."
        ) from None
    try:
        return llm.config_for(
            base_url=conversation.llm_base_url, model=conversation.llm_model, api_key=api_key
        )
    except llm.LLMError as error:  # an own endpoint no longer allowed (the settings changed since)
        raise ServiceError(str(error)) from None


def llm_connection_test(
    *, base_url: str = "", model: str = "", api_key: str = "", conversation: Conversation | None = None
) -> dict:
    """Ask the endpoint, model and key a conversation would use (the form's values; blank ones are the
    platform's) for one short answer, before anyone types a message. ``conversation``: the person's own
    conversation being edited, whose stored key is used when no new key is typed for its own endpoint.
    Returns what answered and how fast; raises ServiceError saying what is wrong and what to do."""
    fields = _clean_llm_fields(llm_base_url=base_url, llm_model=model, system_prompt="")
    base_url, model = fields["llm_base_url"], fields["llm_model"]
    if not api_key and conversation is not None and base_url and base_url == conversation.llm_base_url:
        api_key = conversation_llm_config(conversation).api_key if conversation.has_own_api_key else ""
    if not base_url and not settings.CHAT_LLM_BASE_URL:
        raise ServiceError(
            "This platform has no language model set up: enter an OpenAI-compatible base URL, model and API "
            "key of your own, or ask the administrator."
        )
    _check_own_endpoint(base_url=base_url, has_own_key=bool(api_key))
    try:
        config = llm.config_for(base_url=base_url, model=model, api_key=api_key)
        started = time.monotonic()
        stream = llm.stream_chat(
            [{"role": "user", "content": "Answer with one word: ready?"}], config=config, temperature=0
        )
        try:
            first = next(stream, None)
        finally:
            stream.close()
    except llm.LLMError as error:
        raise ServiceError(str(error)) from None
    if first is None:
        raise ServiceError(f"The endpoint answered, but model {config.model!r} said nothing: check its name.")
    return {
        "ok": True, "model": config.model, "own_endpoint": bool(base_url),
        "first_token_seconds": round(time.monotonic() - started, 3), "answer": first.strip()[:80],
    }  # fmt: skip


def conversation_prompt(conversation: Conversation, *, budget_tokens: int | None = None) -> list[dict]:
    """What the LLM is sent for the next reply: the system prompt and the newest finished turns (the
    last one being the person's) that fit in CHAT_LLM_HISTORY_TOKENS."""
    messages = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    turns = conversation.messages.exclude(text="").filter(
        status__in=[Message.Status.DONE, Message.Status.CANCELED], withdrawn=False
    )
    messages.extend({"role": turn.role, "content": turn.text} for turn in turns.order_by("created_at", "id"))
    return llm.trim_history(messages, budget_tokens=budget_tokens or settings.CHAT_LLM_HISTORY_TOKENS)


def _store_turn_audio(upload: UploadedFile, relative: str) -> None:
    """A spoken turn as 16 kHz mono WAV (what Whisper reads), checked to last at most
    CHAT_TURN_MAX_SECONDS; stored as the media file ``relative``."""
    with storing(upload, relative) as incoming:
        info = probe_audio(incoming.source)
        limit = settings.CHAT_TURN_MAX_SECONDS
        if info.duration > limit:
            raise ServiceError(f"The recording is {info.duration:.0f} s long; a turn may last {limit:.0f} s.")
        to_wav(incoming.source, incoming.target, sample_rate=SPEECH_SAMPLE_RATE)


def reply_checkpoint(avatar) -> tuple[Checkpoint | None, str]:
    """The checkpoint that renders a reply of ``avatar`` (its latest renderable one, as for a video), or
    None and why the reply will only be spoken. A disabled node is an error: the job must run there."""
    from avatars.models import Avatar
    from avatars.runs import default_checkpoint, render_blocker

    if avatar.status != Avatar.Status.TRAINED:
        state = avatar.get_status_display().lower()
        return (
            None,
            f"{avatar.name} is not trained ({state}), so replies are only spoken: train it to see it talk.",
        )
    checkpoint = default_checkpoint(avatar)
    if checkpoint is None:
        return (
            None,
            f"{avatar.name} has no checkpoint that can render, so replies are only spoken: train it again.",
        )
    node, blocker = checkpoint.node, render_blocker(checkpoint)
    if blocker == "disabled":
        raise ServiceError(
            f"Node {node.name}, which holds {avatar.name}'s model and renders its replies, is disabled: "
            "ask an administrator to enable it."
        )
    if blocker == "no dataset":
        return None, (
            f"Node {node.name} holds {avatar.name}'s model but not its preprocessed dataset, which rendering "
            "needs, so replies are only spoken: train the avatar again on that node."
        )
    return checkpoint, ""


def message_send(*, conversation: Conversation, text: str = "", audio: UploadedFile | None = None) -> Message:
    """The person's turn (typed ``text`` or a recorded ``audio``) and the reply it asks for: a pending
    assistant message made by a chat_reply job, pinned to the node of the checkpoint that renders it (or,
    for an avatar that cannot be rendered, placed anywhere and spoken only: ``video_note`` says why).
    Returns the reply (its ``job`` is set)."""
    from jobs.services import job_submit

    text = (text or "").strip()
    if bool(text) == bool(audio):
        raise ServiceError("Send either a text or a recording.")
    if len(text) > 4000:
        raise ServiceError("A message may be at most 4000 characters long.")
    busy = conversation.messages.filter(
        role=Message.Role.ASSISTANT, status__in=[Message.Status.PENDING, Message.Status.RUNNING]
    )
    if busy.exists():
        raise ServiceError("The avatar is still answering: wait for the reply or stop it first.")
    checkpoint, video_note = reply_checkpoint(conversation.avatar)
    with rollback() as written, transaction.atomic():
        user = Message.objects.create(conversation=conversation, role=Message.Role.USER, text=text)
        if audio is not None:
            folder = f"{conversation.folder}/{user.pk}"
            written.append(folder)
            _store_turn_audio(audio, f"{folder}/input.wav")
            user.audio = f"{folder}/input.wav"
            user.save(update_fields=["audio"])
        reply = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING,
            video_note=video_note,
        )  # fmt: skip
        params = {"message": reply.pk}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint.pk
            if settings.LIVE_SESSIONS and conversation.avatar.engine_plugin.live_backend:
                # Rendered by the checkpoint's live session (chat/live.py): the job holds no slot.
                params["live"] = True
        reply.job = job_submit(
            owner=conversation.owner, kind=CHAT_REPLY, params=params, avatar=conversation.avatar,
            node=checkpoint.node if checkpoint is not None else None,
        )  # fmt: skip
        reply.save(update_fields=["job"])
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
        return reply


@transaction.atomic
def reply_played(*, reply: Message, seconds: float) -> None:
    """The browser played the reply's first frame ``seconds`` after the person's speech ended (or the typed
    message was sent): stored once as ``first_frame_played``; a later report of the same reply is ignored."""
    reply = Message.objects.select_for_update().get(pk=reply.pk)
    if "first_frame_played" in reply.timings:
        return
    reply.timings = {**reply.timings, "first_frame_played": round(seconds, 3)}
    reply.save(update_fields=["timings"])


def reply_stop(*, reply: Message) -> Message:
    """The stop button (and a barge-in): the rest of the reply is not made (the chunks already spoken
    stay); the live session's render in flight is stopped at once (chat/live.py ``barge_in_signal``)."""
    from jobs.services import job_cancel

    from .live import barge_in_signal

    if reply.job is None or reply.job.is_terminal:
        raise ServiceError("This reply is not being made any more; there is nothing to stop.")
    job_cancel(job=reply.job)  # committed first: the turn may end within 0.1 s of the signal
    barge_in_signal(reply)
    reply.refresh_from_db()
    return reply


def turn_withdraw(*, reply: Message) -> None:
    """The page sent a hands-free turn at the first pause in the person's speech (to start on the answer
    while it waits to be sure the turn is over: static/js/voice_activity.js EARLY_MS), and the person went
    on speaking: that turn and ``reply`` leave the conversation (kept, marked ``withdrawn``: not shown, not
    in the LLM's history), and the reply stops like a barge-in. The whole utterance comes as the next turn.
    Only the conversation's newest reply can be withdrawn."""
    newest = reply.conversation.messages.filter(role=Message.Role.ASSISTANT).order_by("-created_at", "-id")
    if newest.values_list("pk", flat=True).first() != reply.pk:
        raise ServiceError("Only the newest reply can be withdrawn: a later turn has been answered since.")
    user = turn_answered_by(reply)
    Message.objects.filter(pk__in=[reply.pk] + ([user.pk] if user else [])).update(withdrawn=True)
    with contextlib.suppress(ServiceError):  # the reply had already ended: nothing left to stop
        reply_stop(reply=reply)


def conversation_warm_up(*, conversation: Conversation) -> dict:
    """The page of ``conversation`` opened: start its avatar's live session if one can be had, in a worker
    serving the node that holds the model. Returns the ``chat.live`` event to answer with now; the worker
    announces the rest (ready, or spoken only and why) to the conversation's group."""
    from core.queues import queue_named

    from .live import LiveRefused, live_session_admit
    from .models import LiveSession

    try:
        checkpoint, note = reply_checkpoint(conversation.avatar)
    except ServiceError as error:
        return {"type": "chat.live", "state": "spoken_only", "reason": str(error)}
    if checkpoint is None:
        return {"type": "chat.live", "state": "spoken_only", "reason": note}
    running = LiveSession.objects.filter(checkpoint=checkpoint, state=LiveSession.State.READY).exists()
    if running:
        return {"type": "chat.live", "state": "ready", "reason": "The model is loaded."}
    try:
        if not settings.LIVE_SESSIONS or not conversation.avatar.engine_plugin.live_backend:
            live_session_admit(checkpoint=checkpoint)  # raises with the reason
    except LiveRefused as refusal:
        return {"type": "chat.live", "state": "spoken_only", "reason": str(refusal)}
    queue_named(checkpoint.node.queue_name).enqueue(
        "chat.tasks.live_warm_up", conversation.pk, job_timeout=600, result_ttl=60
    )
    return {"type": "chat.live", "state": "starting", "reason": "Loading the avatar's model…"}
