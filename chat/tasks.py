"""RQ entry points of the chat app."""

from __future__ import annotations

from django.db import close_old_connections

from .events import publisher_for
from .live import LiveRefused, live_session_ready
from .models import Conversation

WARM_UP = "chat.tasks.live_warm_up"


def live_warm_up(conversation_id: int) -> str:
    """Start the live session of a conversation's avatar (its page opened), in a worker serving the node
    that holds the model; the page hears ``chat.live`` (ready, or spoken_only and why)."""
    from .services import reply_checkpoint

    close_old_connections()
    conversation = Conversation.objects.select_related("avatar").filter(pk=conversation_id).first()
    if conversation is None:
        return "gone"
    publish = publisher_for(conversation_id)
    checkpoint, _ = reply_checkpoint(conversation.avatar)
    if checkpoint is None:
        return "not rendered"
    try:
        return live_session_ready(checkpoint=checkpoint, publish=publish).state
    except LiveRefused:
        return "refused"
