"""The conversation websocket's live parts, through the real Redis channel layer: a ``chat.segment`` sent to
the conversation's group reaches its owner as one binary frame (header length, JSON header, the piece's
bytes); what the browser says back (played, barge_in, withdraw, warm_up) acts on the owner's own reply
only, and a bad message gets a clear error, never a closed socket."""

# ruff: noqa: F811 - pytest fixtures imported from the other chat tests are parameters here

from __future__ import annotations

import json
import struct

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from chat import services
from chat.events import conversation_group
from chat.models import Message
from chat.turn import reply_run
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar
from tests.chat.test_socket import application, token


@pytest.fixture
def conversation(alice, transactional_db):
    return services.conversation_create(owner=alice, avatar=make_avatar(alice))


def talk(user, conversation, steps):
    """Connects as ``user`` and runs ``steps(communicator)``; returns what it returns."""

    headers = token(user)

    async def run():
        communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        try:
            return await steps(communicator)
        finally:
            await communicator.disconnect()

    return async_to_sync(run)()


@pytest.mark.django_db(transaction=True)
def test_a_segment_reaches_the_owner_as_one_binary_frame(alice, conversation, redis_db):
    piece = b"\x00\x00\x00\x18moof" + bytes(range(256)) * 4

    async def steps(communicator):
        await get_channel_layer().group_send(
            conversation_group(conversation.pk),
            {"type": "chat.segment", "message": 7, "index": 2, "seq": 0, "last": True, "data": piece},
        )
        return await communicator.receive_output(timeout=5)

    frame = talk(alice, conversation, steps)["bytes"]
    (length,) = struct.unpack(">I", frame[:4])
    assert json.loads(frame[4 : 4 + length]) == {
        "type": "segment", "message": 7, "index": 2, "seq": 0, "last": True
    }  # fmt: skip
    assert frame[4 + length :] == piece


@pytest.mark.django_db(transaction=True)
def test_played_is_stored_once_for_the_owners_reply_only(alice, bob, conversation, redis_db):
    reply = Message.objects.create(conversation=conversation, role="assistant", status="running")
    theirs_conversation = services.conversation_create(owner=bob, avatar=make_avatar(bob, "Bobby"))
    theirs = Message.objects.create(conversation=theirs_conversation, role="assistant", status="running")

    async def steps(communicator):
        answers = []
        for content in (
            {"action": "played", "message": reply.pk, "index": 0, "speech_end_to_played": 1.2345},
            {"action": "played", "message": reply.pk, "index": 1, "speech_end_to_played": 9.0},  # once only
            {"action": "played", "message": theirs.pk, "index": 0, "speech_end_to_played": 0.5},  # not hers
            {"action": "warm_up"},
        ):
            await communicator.send_json_to(content)
        # Bob's reply is not found here (the same answer as a reply that does not exist).
        refused = await communicator.receive_json_from(timeout=5)
        assert refused == {
            "type": "error",
            "action": "played",
            "error": "No such reply in this conversation.",
        }
        # warm_up is answered: this avatar has no trained model, so replies will be spoken only, and why.
        live = await communicator.receive_json_from(timeout=5)
        assert live["type"] == "live" and live["state"] == "spoken_only" and live["reason"], live
        for content in (
            {"action": "played", "message": reply.pk, "speech_end_to_played": "soon"},
            {"action": "dance"},
            ["not", "an", "object"],
        ):
            await communicator.send_json_to(content)
            answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_to(text_data="{not json")
        answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_to(bytes_data=b"\x00\x01")
        answers.append(await communicator.receive_json_from(timeout=5))
        assert await communicator.receive_nothing(timeout=0.2)
        return answers

    answers = talk(alice, conversation, steps)
    reply.refresh_from_db()
    theirs.refresh_from_db()
    assert reply.timings == {"first_frame_played": 1.234}  # rounded to the millisecond, the first one kept
    assert theirs.timings == {}
    assert answers == [
        {"type": "error", "error": "played needs speech_end_to_played in seconds."},
        {"type": "error", "error": "Unknown action 'dance'."},
        {"type": "error", "error": "Unknown action None."},
        {"type": "error", "error": "Unknown action None."},  # not JSON: the socket stays open
        {"type": "error", "error": "Unknown action None."},  # a binary frame
    ]


@pytest.mark.django_db(transaction=True)
def test_barge_in_stops_the_owners_reply(alice, conversation, make_node, redis_db):
    make_node()
    reply = services.message_send(conversation=conversation, text="Tell me everything.")

    async def steps(communicator):
        await communicator.send_json_to({"action": "barge_in", "message": reply.pk})
        await communicator.send_json_to({"action": "barge_in", "message": reply.pk})  # already stopped: fine
        assert await communicator.receive_nothing(timeout=0.5)

    talk(alice, conversation, steps)
    reply.job.refresh_from_db()
    assert reply.job.status == "canceled"


@pytest.mark.django_db(transaction=True)
def test_played_during_the_turn_outlives_the_turns_own_timings(alice, conversation, llm_server, settings):
    """The browser reports played while the turn still runs; the turn's final save keeps it."""
    settings.CHAT_LLM_BASE_URL = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    settings.CHAT_XTTS_DIR = ""
    settings.CHAT_SENTENCE_MIN_CHARS = 5
    llm_server.pieces, llm_server.delay = ["Hello there.", " How are you", " today?"], 0.05
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="pending")

    def publish(event):
        if event["type"] == "chat.chunk" and event["index"] == 0:  # the first sentence is being heard
            services.reply_played(reply=reply, seconds=0.75)

    reply_run(reply=reply, publish=publish)
    reply.refresh_from_db()
    assert reply.status == "done"
    assert reply.timings["first_frame_played"] == 0.75 and "whole_reply" in reply.timings


@pytest.mark.django_db(transaction=True)
def test_withdraw_takes_the_owners_newest_turn_back_and_stops_its_reply(
    alice, bob, conversation, make_node, redis_db
):
    from django.test import Client
    from rest_framework.test import APIClient

    make_node()
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    answered = Message.objects.create(
        conversation=conversation, role="assistant", status="done", text="Hello."
    )
    reply = services.message_send(conversation=conversation, text="Tell me")  # sent at a pause
    turn = conversation.messages.get(role="user", text="Tell me")
    theirs_conversation = services.conversation_create(owner=bob, avatar=make_avatar(bob, "Bobby"))
    theirs = services.message_send(conversation=theirs_conversation, text="Mine")

    async def steps(communicator):
        answers = []
        for content in (
            {"action": "withdraw", "message": theirs.pk},  # not hers: not found, nothing changes
            {"action": "withdraw", "message": str(reply.pk)},  # not a number: the same answer
            {"action": "withdraw", "message": answered.pk},  # an older reply: a turn came after it
            {"action": "withdraw", "message": reply.pk},
            {"action": "withdraw", "message": reply.pk},  # again: already stopped, nothing to say
        ):
            await communicator.send_json_to(content)
        for _ in range(3):
            answers.append(await communicator.receive_json_from(timeout=5))
        assert await communicator.receive_nothing(timeout=0.5)
        return answers

    answers = talk(alice, conversation, steps)
    assert answers == [
        {"type": "error", "action": "withdraw", "error": "No such reply in this conversation."},
        {"type": "error", "action": "withdraw", "error": "No such reply in this conversation."},
        {"type": "error", "action": "withdraw",
         "error": "Only the newest reply can be withdrawn: a later turn has been answered since."},
    ]  # fmt: skip
    reply.job.refresh_from_db()
    theirs.job.refresh_from_db()
    assert reply.job.status == "canceled" and theirs.job.status != "canceled"
    assert set(Message.objects.filter(withdrawn=True).values_list("pk", flat=True)) == {reply.pk, turn.pk}
    # Out of the conversation: the LLM's history, the page and the API no longer have the turn.
    Message.objects.filter(pk=reply.pk).update(status="canceled", text="Once upon")  # as the worker ends it
    assert services.conversation_prompt(conversation) == [
        {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
    ]  # fmt: skip
    page = Client()
    page.force_login(alice)
    html = page.get(f"/chat/{conversation.pk}/").content.decode()
    assert "Hi!" in html and "Tell me" not in html and "Once upon" not in html
    api = APIClient()
    api.force_authenticate(alice)
    listed = api.get(f"/api/conversations/{conversation.pk}/messages/").json()["results"]
    assert [m["id"] for m in listed] == [answered.pk - 1, answered.pk]
    # The next turn is taken once the withdrawn reply has ended.
    assert services.message_send(conversation=conversation, text="Tell me about Paris").status == "pending"
