"""``/ws/chat/<conversation id>/``: a reply as it is made — stage changes, the text token by token, each
spoken chunk as soon as it exists and its video once rendered, the pieces of its live stream as binary
frames, the end with its timings — to the conversation's owner only; and what the browser says back
(``{"action": ...}``: barge_in — the person spoke over the reply, it stops like the Stop button and the
live session's render in flight at once; withdraw — the person went on speaking after the page sent
their turn at a pause, so that turn and its reply leave the conversation and the reply stops; played —
stored as the reply's ``first_frame_played``; warm_up — start the avatar's live render session, answered
with a ``live`` event). Only the owner's own replies in this conversation count.

A binary frame is ``4-byte big-endian header length + UTF-8 JSON header + bytes``; the header is
``{"type": "segment", "message", "index", "seq", "last"}`` and the bytes are one piece of a fragmented MP4
(each sentence starts with its own init segment at seq 0). ``static/js/live_player.js`` reads them."""

from __future__ import annotations

import contextlib
import json
import struct

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.errors import ServiceError

from .events import conversation_group
from .selectors import conversations_visible_to, messages_visible_to
from .services import conversation_warm_up, reply_played, reply_stop, turn_withdraw


@database_sync_to_async
def _visible(user, conversation_id: int) -> bool:
    return conversations_visible_to(user).filter(pk=conversation_id).exists()


@database_sync_to_async
def _reply(user, conversation_id: int, message_id):
    """The conversation's assistant message ``message_id`` if it is this user's, else None."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        return None
    return (
        messages_visible_to(user)
        .filter(conversation_id=conversation_id, role="assistant", pk=message_id)
        .select_related("job")
        .first()
    )


def segment_frame(event: dict) -> bytes:
    """The binary websocket frame of one live-stream piece (see the module docstring)."""
    header = json.dumps(
        {"type": "segment", "message": event["message"], "index": event["index"], "seq": event["seq"],
         "last": bool(event["last"])},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    return struct.pack(">I", len(header)) + header + event["data"]


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

    async def _forward(self, event):
        await self.send_json({**event, "type": event["type"].removeprefix("chat.")})

    # One handler per event type a turn publishes (chat.turn): "chat.token" → chat_token, and so on.
    chat_stage = chat_transcript = chat_token = chat_chunk = chat_video = chat_chunk_video = chat_reply = (
        _forward
    )
    chat_live = _forward  # the live render session's state (chat/live.py)

    async def chat_segment(self, event):
        await self.send(bytes_data=segment_frame(event))

    # --- what the browser says ----------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Not JSON, or a binary frame: answered with the same clear error as an unknown action.
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        action = content.get("action") if isinstance(content, dict) else None
        handler = self.ACTIONS.get(action) if isinstance(action, str) else None
        if handler is None:
            await self.send_json({"type": "error", "error": f"Unknown action {action!r}."})
            return
        await handler(self, content)

    async def action_barge_in(self, content):
        """The person started speaking while the avatar talked: the rest of that reply is not made."""
        reply = await _reply(self.scope["user"], self.conversation_id, content.get("message"))
        if reply is None:
            await self._no_such_reply("barge_in")
            return
        await _stop(reply)

    async def action_withdraw(self, content):
        """The page sent the turn at a pause and the person went on speaking (chat.services.turn_withdraw)."""
        reply = await _reply(self.scope["user"], self.conversation_id, content.get("message"))
        if reply is None:
            await self._no_such_reply("withdraw")
            return
        try:
            await _withdraw(reply)
        except ServiceError as error:
            await self.send_json({"type": "error", "action": "withdraw", "error": str(error)})

    async def action_played(self, content):
        """The browser played the reply's first frame: the turn's last timing."""
        seconds = content.get("speech_end_to_played")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds < 3600:
            await self.send_json({"type": "error", "error": "played needs speech_end_to_played in seconds."})
            return
        reply = await _reply(self.scope["user"], self.conversation_id, content.get("message"))
        if reply is None:
            await self._no_such_reply("played")
            return
        await _played(reply, float(seconds))

    async def _no_such_reply(self, action: str):
        # Another person's reply, or none at all: the same answer (it is not found), and nothing changes.
        await self.send_json(
            {"type": "error", "action": action, "error": "No such reply in this conversation."}
        )

    async def action_warm_up(self, content):
        """The page opened with the microphone on: a turn may come soon, so the avatar's live render
        session starts now (in a worker of its node); the answer says whether it is ready, starting, or
        why replies will be spoken only."""
        await self._forward(await _warm_up(self.scope["user"], self.conversation_id))

    ACTIONS = {
        "barge_in": action_barge_in, "withdraw": action_withdraw, "played": action_played,
        "warm_up": action_warm_up,
    }  # fmt: skip


@database_sync_to_async
def _withdraw(reply) -> None:
    turn_withdraw(reply=reply)


@database_sync_to_async
def _stop(reply) -> None:
    with contextlib.suppress(ServiceError):  # the reply had already ended: nothing left to stop
        reply_stop(reply=reply)


@database_sync_to_async
def _played(reply, seconds: float) -> None:
    reply_played(reply=reply, seconds=seconds)


@database_sync_to_async
def _warm_up(user, conversation_id: int) -> dict:
    conversation = conversations_visible_to(user).get(pk=conversation_id)
    return conversation_warm_up(conversation=conversation)
