from __future__ import annotations

from django.db.models import QuerySet

from core import media

from .models import Chunk, Conversation, Message, Voice


def voices_visible_to(user) -> QuerySet[Voice]:
    """Only the owner sees a voice — it is a person's voice; staff use the admin."""
    if not user.is_authenticated:
        return Voice.objects.none()
    return Voice.objects.filter(owner=user)


def conversations_visible_to(user) -> QuerySet[Conversation]:
    if not user.is_authenticated:
        return Conversation.objects.none()
    return Conversation.objects.filter(owner=user).select_related("avatar", "voice")


def messages_visible_to(user) -> QuerySet[Message]:
    if not user.is_authenticated:
        return Message.objects.none()
    return Message.objects.filter(conversation__owner=user)


def turn_answered_by(reply: Message) -> Message | None:
    """The person's turn that ``reply`` answers: their newest message in the conversation up to the reply
    (chat.services.message_send makes the two together)."""
    return (
        Message.objects.filter(
            conversation_id=reply.conversation_id, role=Message.Role.USER, created_at__lte=reply.created_at
        )
        .order_by("created_at", "id")
        .last()
    )


def chunks_visible_to(user) -> QuerySet[Chunk]:
    if not user.is_authenticated:
        return Chunk.objects.none()
    return Chunk.objects.filter(message__conversation__owner=user)


def chat_storage_bytes(user) -> int:
    """What the person's voices and conversations (recordings, spoken replies, clips) take in the media
    store (their quota, accounts/quotas.py)."""
    folders = [f"voices/{slug}" for slug in Voice.objects.filter(owner=user).values_list("slug", flat=True)]
    folders += [
        f"conversations/{pk}" for pk in Conversation.objects.filter(owner=user).values_list("pk", flat=True)
    ]
    return sum(media.size(folder) for folder in folders)
