"""Live events of a conversation: what a reply turn announces goes to ``chat_<conversation id>``, which the
conversation's websocket (``chat.consumers``) forwards to its owner's browser."""

from __future__ import annotations

from collections.abc import Callable

from jobs import events


def conversation_group(conversation_id: int) -> str:
    return f"chat_{conversation_id}"


def publisher_for(conversation_id: int) -> Callable[[dict], None]:
    """The ``publish`` a turn of this conversation is given (see chat.turn.reply_run)."""
    group = conversation_group(conversation_id)

    def publish(event: dict) -> None:
        events.publish(group, {**event, "conversation": conversation_id})

    return publish
