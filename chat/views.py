from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.authentication import login_or_token_required
from avatars.uploads import upload_too_large_message
from core.errors import ServiceError
from core.http import delete_confirmation, private_file

from .forms import ConversationForm, VoiceCreateForm
from .models import Chunk, Message
from .selectors import chunks_visible_to, conversations_visible_to, voices_visible_to
from .services import (
    UNCHANGED,
    conversation_create,
    conversation_delete,
    conversation_update,
    reply_checkpoint,
    voice_create,
    voice_delete,
)  # fmt: skip
from .tts import xtts_missing

# --- pages ---------------------------------------------------------------------------------------------


@login_required
def conversation_list(request):
    return render(
        request, "chat/conversation_list.html",
        {"conversations": conversations_visible_to(request.user), "voices": voices_visible_to(request.user)},
    )  # fmt: skip


@login_required
def conversation_new(request):
    # ?avatar=<id> (the dashboard's Chat button) chooses the avatar; the form's queryset keeps it to hers.
    initial = {"avatar": request.GET["avatar"]} if request.GET.get("avatar", "").isdigit() else {}
    form = ConversationForm(request.POST or None, user=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            conversation = conversation_create(
                owner=request.user, avatar=data["avatar"], voice=data["voice"], language=data["language"],
                title=data["title"], system_prompt=data["system_prompt"], llm_base_url=data["llm_base_url"],
                llm_model=data["llm_model"], llm_api_key=data["llm_api_key"],
            )  # fmt: skip
        except ServiceError as error:
            form.add_error(None, str(error))
        else:
            return redirect("chat-conversation", conversation_id=conversation.pk)
    # Set up when its endpoint and key are (services.llm_connection_test says the same in its errors).
    platform_llm = bool(settings.CHAT_LLM_BASE_URL and settings.CHAT_LLM_API_KEY)
    return render(request, "chat/conversation_new.html", {"form": form, "platform_llm": platform_llm})


def _settings_form(request, conversation, data=None) -> ConversationForm:
    initial = {
        "voice": conversation.voice_id, "language": conversation.language, "title": conversation.title,
        "system_prompt": conversation.system_prompt, "llm_base_url": conversation.llm_base_url,
        "llm_model": conversation.llm_model,
    }  # fmt: skip
    return ConversationForm(data, initial=initial, user=request.user, editing=True)


@login_required
def conversation_detail(request, conversation_id: int):
    """The conversation's history (each reply's sentences with their speech and stage timings) and its
    settings."""
    conversation = get_object_or_404(conversations_visible_to(request.user), pk=conversation_id)
    form = _settings_form(request, conversation, request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        key = "" if data["remove_api_key"] else (data["llm_api_key"] or UNCHANGED)
        try:
            conversation_update(
                conversation=conversation, voice=data["voice"], language=data["language"],
                title=data["title"], system_prompt=data["system_prompt"], llm_base_url=data["llm_base_url"],
                llm_model=data["llm_model"], llm_api_key=key,
            )  # fmt: skip
        except ServiceError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Settings saved.")
            return redirect("chat-conversation", conversation_id=conversation.pk)
    turns = (
        conversation.messages.filter(withdrawn=False)
        .order_by("created_at", "id")
        .prefetch_related(Prefetch("chunks", queryset=Chunk.objects.order_by("index")))
    )
    try:  # whether the next reply will be shown as video, and why not
        video_note = reply_checkpoint(conversation.avatar)[1]
    except ServiceError as error:
        video_note = str(error)
    return render(
        request, "chat/conversation_detail.html",
        {"conversation": conversation, "turns": turns, "form": form, "xtts_missing": xtts_missing(),
         "video_note": video_note, "platform_llm": bool(settings.CHAT_LLM_BASE_URL),
         "platform_llm_key": bool(settings.CHAT_LLM_API_KEY), "timing_labels": Message.TIMING_LABELS,
         "early_turn_ms": settings.CHAT_EARLY_TURN_MS},
    )  # fmt: skip


@login_required
@require_POST
def conversation_delete_view(request, conversation_id: int):
    conversation = get_object_or_404(conversations_visible_to(request.user), pk=conversation_id)
    if ask := delete_confirmation(
        request, title=f"Delete the conversation “{conversation}”?",
        cancel_url=reverse("chat-conversation", args=[conversation.pk]),
        consequences="Its messages, their recordings and the avatar's spoken replies are deleted.",
    ):  # fmt: skip
        return ask
    conversation_delete(conversation=conversation)
    messages.success(request, "The conversation and its recordings were deleted.")
    return redirect("chat-list")


@login_required
def voice_list(request):
    """The user's voices, and the form that adds one."""
    form = VoiceCreateForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if getattr(request, "upload_too_large", False):
            form.add_error("recording", upload_too_large_message())
        elif form.is_valid():
            data = form.cleaned_data
            try:
                voice = voice_create(
                    owner=request.user, name=data["name"], language=data["language"],
                    recording=data["recording"], consent=data["consent"],
                )  # fmt: skip
            except ServiceError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Voice {voice.name} added.")
                return redirect("chat-voices")
    return render(
        request, "chat/voice_list.html",
        {"voices": voices_visible_to(request.user), "form": form, "xtts_missing": xtts_missing()},
    )  # fmt: skip


@login_required
@require_POST
def voice_delete_view(request, voice_id: int):
    voice = get_object_or_404(voices_visible_to(request.user), pk=voice_id)
    if ask := delete_confirmation(
        request, title=f"Delete the voice {voice.name}?", cancel_url=reverse("chat-voices"),
        consequences="Its recording is deleted; conversations and videos that use it fall back to the "
        "standard voice.",
    ):  # fmt: skip
        return ask
    try:
        voice_delete(voice=voice)
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("chat-voices")
    messages.success(request, f"Voice {voice.name} and its recording were deleted.")
    return redirect("chat-voices")


# --- media ---------------------------------------------------------------------------------------------


@login_or_token_required
def voice_reference(request, voice_id: int):
    voice = get_object_or_404(voices_visible_to(request.user), pk=voice_id)
    return private_file(request, voice.reference)


@login_or_token_required
def chunk_media(request, chunk_id: int, what: str):
    chunk = get_object_or_404(chunks_visible_to(request.user), pk=chunk_id)
    if what not in {"audio", "video"}:
        raise Http404("No such file.")
    return private_file(request, getattr(chunk, what))
