"""``/ws/chat/<conversation id>/``: a reply as it is made — stage changes, the text token by token, each
spoken chunk as soon as it exists and its video once rendered, the live session's state and its fMP4
pieces as binary frames, the end with its timings — to the conversation's owner only.

From the browser (JSON): ``{"action": "warm_up"}`` (start the live session; answered with ``live``),
``{"action": "barge_in", "message": id}`` (the person spoke over the reply: it stops like the Stop button,
the session's render in flight at once), ``{"action": "played", "message": id, "index": k,
"speech_end_to_played": seconds}`` (stored as the reply's ``first_frame_played``). Only the owner's own
replies in this conversation count; anything else is answered with an ``error`` event and changes
nothing."""

from __future__ import annotations

import json
import struct

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.errors import ServiceError

from . import services
from .events import conversation_group
from .models import Message
from .selectors import conversations_visible_to, messages_visible_to


@database_sync_to_async
def _visible(user, conversation_id: int) -> bool:
    return conversations_visible_to(user).filter(pk=conversation_id).exists()


def _own_reply(user, conversation_id: int, message_id) -> Message | None:
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        return None
    return (
        messages_visible_to(user)
        .select_related("job")
        .filter(pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT)
        .first()
    )


@database_sync_to_async
def _barge_in(user, conversation_id: int, message_id) -> str | None:
    reply = _own_reply(user, conversation_id, message_id)
    if reply is None:
        return "No such reply in this conversation."
    if reply.job is None or reply.job.is_terminal:
        return None  # it has ended already: nothing to stop
    try:
        services.reply_stop(reply=reply)
    except ServiceError:
        return None  # it ended meanwhile
    return None


@database_sync_to_async
def _played(user, conversation_id: int, content: dict) -> str | None:
    reply = _own_reply(user, conversation_id, content.get("message"))
    if reply is None:
        return "No such reply in this conversation."
    index, seconds = content.get("index"), content.get("speech_end_to_played")
    if isinstance(index, bool) or not isinstance(index, int):
        return "played needs the chunk's index (an integer)."
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "played needs speech_end_to_played in seconds (a number)."
    try:
        services.reply_played(reply=reply, index=index, seconds=float(seconds))
    except ServiceError as error:
        return str(error)
    return None


@database_sync_to_async
def _warm_up(user, conversation_id: int) -> dict:
    conversation = conversations_visible_to(user).get(pk=conversation_id)
    return services.conversation_warm_up(conversation=conversation)


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await _visible(user, self.conversation_id):
            await self.close(code=4404)  # not found, whether it does not exist or is someone else's
            return
        self.group = conversation_group(self.conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        user = self.scope["user"]
        action = content.get("action") if isinstance(content, dict) else None
        if action == "barge_in":
            problem = await _barge_in(user, self.conversation_id, content.get("message"))
        elif action == "played":
            problem = await _played(user, self.conversation_id, content)
        elif action == "warm_up":
            await self._forward(await _warm_up(user, self.conversation_id))
            return
        else:
            problem = "Unknown action: use warm_up, barge_in or played."
        if problem:
            await self.send_json({"type": "error", "action": action, "error": problem})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            return  # the browser sends no binary frames
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_json({"type": "error", "error": "Send JSON."})
            return
        await self.receive_json(content)

    async def _forward(self, event):
        await self.send_json({**event, "type": event["type"].removeprefix("chat.")})

    # One handler per event type a turn publishes (chat.turn): "chat.token" → chat_token, and so on.
    chat_stage = chat_transcript = chat_token = chat_chunk = chat_video = chat_chunk_video = chat_reply = (
        _forward
    )
    chat_live = _forward

    async def chat_segment(self, event):
        """One fMP4 piece as ONE binary frame: a 4-byte big-endian header length, the JSON header, the
        bytes (the browser's Media Source appends them in ``seq`` order)."""
        header = json.dumps({
            "type": "segment", "message": event["message"], "index": event["index"], "seq": event["seq"],
            "last": event["last"],
        }).encode()  # fmt: skip
        await self.send(bytes_data=struct.pack(">I", len(header)) + header + bytes(event["data"]))
