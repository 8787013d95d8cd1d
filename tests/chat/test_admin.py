"""The admin lists voices, conversations and messages, and never shows a conversation's API key."""

from __future__ import annotations

from accounts.models import User
from chat import services
from chat.models import Chunk, Message
from tests.chat.test_services import make_avatar


def test_admin_pages_render_without_the_api_key(alice, client):
    admin = User.objects.create_superuser("root", password="root-password-1")
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), llm_api_key="sk-secret-never-shown"
    )
    message = Message.objects.create(conversation=conversation, role="assistant", text="Hello there.")
    Chunk.objects.create(message=message, index=0, text="Hello there.")
    client.force_login(admin)
    pages = [
        "/admin/chat/voice/",
        "/admin/chat/conversation/",
        f"/admin/chat/conversation/{conversation.pk}/change/",
        "/admin/chat/message/",
        f"/admin/chat/message/{message.pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        assert "sk-secret-never-shown" not in body
        assert conversation.llm_api_key_encrypted not in body
