"""``/ws/chat/<conversation id>/``: a reply as it is made — stage changes, the text token by token, each
spoken chunk as soon as it exists and its video once rendered, the end with its timings — to the
conversation's owner only."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .events import conversation_group
from .selectors import conversations_visible_to


@database_sync_to_async
def _visible(user, conversation_id: int) -> bool:
    return conversations_visible_to(user).filter(pk=conversation_id).exists()


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
