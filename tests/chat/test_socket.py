"""The conversation websocket: its owner hears a reply being made (stages, tokens, chunks in order, the end)
through the real Redis channel layer; anyone else is refused as if the conversation did not exist."""

# ruff: noqa: F811 - pytest fixtures imported from the other chat tests are parameters here

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from accounts.services import api_token_rotate
from accounts.websocket import BrowserOriginCheck, SessionOrTokenAuthStack
from chat import routing, services
from chat.events import publisher_for
from chat.models import Message
from chat.turn import reply_run
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar

# The same stack as talkforge.asgi's websocket route.
application = BrowserOriginCheck(SessionOrTokenAuthStack(URLRouter(routing.websocket_urlpatterns)))


def token(user) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {api_token_rotate(user=user)}".encode())]


@pytest.fixture
def conversation(alice, transactional_db):
    return services.conversation_create(owner=alice, avatar=make_avatar(alice))


@pytest.mark.django_db(transaction=True)
def test_others_and_anonymous_are_refused(bob, conversation):
    async def connect(headers):
        communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
        connected, code = await communicator.connect(timeout=5)
        return connected, code

    assert async_to_sync(connect)(token(bob)) == (False, 4404)
    assert async_to_sync(connect)([]) == (False, 4404)


@pytest.mark.django_db(transaction=True)
def test_the_owner_hears_the_reply_as_it_is_made(alice, conversation, redis_db, llm_server, settings):
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    settings.CHAT_XTTS_DIR = ""
    settings.CHAT_SENTENCE_MIN_CHARS = 5
    llm_server.pieces = ["Hello there.", " How are you", " today?"]
    llm_server.delay = 0.05
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")
    headers = token(alice)

    async def run():
        communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await sync_to_async(reply_run)(reply=reply, publish=publisher_for(conversation.pk))
        received = []
        while not received or received[-1]["type"] != "reply":
            received.append(await communicator.receive_json_from(timeout=10))
        await communicator.disconnect()
        return received

    received = async_to_sync(run)()
    kinds = [event["type"] for event in received]
    assert received[0] == {"type": "video", "message": reply.pk, "on": False, "from": 0, "note": "",
                           "conversation": conversation.pk}  # fmt: skip
    assert kinds[1] == "stage" and received[1]["stage"] == "llm"
    assert [e["text"] for e in received if e["type"] == "token"] == llm_server.pieces
    chunks = [e for e in received if e["type"] == "chunk"]
    assert [(c["index"], c["text"]) for c in chunks] == [(0, "Hello there."), (1, "How are you today?")]
    assert chunks[0]["voice_engine"] == "espeak-ng"
    assert kinds.index("chunk") < len(kinds) - 1 - kinds[::-1].index("token")  # spoken before the last token
    end = received[-1]
    assert end["status"] == "done" and end["message"] == reply.pk
    assert set(end["timings"]) >= {"llm_first_token", "first_sentence", "tts_first_audio", "whole_reply"}
    assert all(event["conversation"] == conversation.pk for event in received)
