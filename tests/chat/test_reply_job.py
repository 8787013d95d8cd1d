"""A whole chat turn as a job: a recording posted to the API → a real RQ worker (on the avatar's local node)
runs the reply in its own process with the tiny Whisper and XTTS models → chunks in order, stage timings,
the job's log; stop cancels the rest; an LLM failure fails job and reply alike; bob gets 404."""

# ruff: noqa: F811 - pytest fixtures imported from the other chat tests are parameters here

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from chat import services
from chat.models import Message
from chat.services import CHAT_REPLY
from jobs.models import Job
from tests.chat.test_asr import speech_wav, tiny_whisper  # noqa: F401
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.chat.test_services import make_avatar, tone, upload
from tests.chat.test_tts import tiny_xtts  # noqa: F401

REPLY = ["Hello there, I am Ada", ". Nice to meet", " you! What shall we", " talk about today?"]


@pytest.fixture
def chat_worker(transactional_db, redis_db, make_node, processes, llm_server, tiny_whisper, tiny_xtts):
    node = make_node()
    llm_server.pieces = REPLY
    llm_server.delay = 0.3
    processes.worker(
        node.name,
        CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/",
        CHAT_LLM_API_KEY="sk-platform",
        CHAT_WHISPER_MODEL=tiny_whisper,
        CHAT_WHISPER_DEVICE="cpu",
        CHAT_XTTS_DIR=tiny_xtts,
        CHAT_XTTS_DEVICE="cpu",
        CHAT_SENTENCE_MIN_CHARS=10,
    )
    return node


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def settled(reply_id: int, timeout: float = 90) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = Message.objects.select_related("job").get(pk=reply_id)
        if reply.status not in (Message.Status.PENDING, Message.Status.RUNNING) and reply.job.is_terminal:
            return reply
        time.sleep(0.2)
    raise AssertionError(f"reply {reply_id} did not finish: {reply.status}, job {reply.job.status}")


def test_a_spoken_turn_becomes_a_reply_job_with_ordered_chunks(alice, bob, chat_worker, speech_wav, tmp_path):
    voice = services.voice_create(
        owner=alice, name="Grace", recording=upload(tone(tmp_path / "v.wav", 4)), consent=True
    )
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), voice=voice, language="en", system_prompt="You are Ada."
    )
    url = f"/api/conversations/{conversation.pk}/messages/"
    assert api_for(bob).post(url, {"text": "hi"}, format="json").status_code == 404
    with open(speech_wav, "rb") as audio:
        response = api_for(alice).post(url, {"audio": audio}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["job"]

    reply = settled(body["id"])
    assert reply.status == Message.Status.DONE, reply.error
    job = reply.job
    assert (job.kind, job.status, job.node) == (CHAT_REPLY, Job.Status.SUCCEEDED, chat_worker)
    assert job.result["chunks"] == 3 and job.result["message"] == reply.pk
    assert [c.text for c in reply.chunks.order_by("index")] == [
        "Hello there,", "I am Ada. Nice to meet you!", "What shall we talk about today?",
    ]  # fmt: skip
    assert reply.voice_engine == "xtts"
    user = conversation.messages.get(role="user")
    assert user.audio.endswith("/input.wav") and user.text and user.language == "en"
    assert set(reply.timings) >= {
        "asr",
        "llm_first_token",
        "first_sentence",
        "tts_first_audio",
        "whole_reply",
    }
    log = "\n".join(chunk.text for chunk in job.log_chunks.order_by("first_line"))
    assert "[chat] sentence 1 spoken by xtts: Hello there," in log
    assert "[chat] reply done" in log

    messages = api_for(alice).get(url).json()["results"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert [c["index"] for c in messages[1]["chunks"]] == [0, 1, 2]
    assert api_for(bob).get(url).status_code == 404


def test_stop_cancels_the_rest_of_the_reply(alice, chat_worker, llm_server):
    llm_server.delay = 1.5
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    url = f"/api/conversations/{conversation.pk}/"
    reply_id = api_for(alice).post(f"{url}messages/", {"text": "Tell me."}, format="json").json()["id"]
    deadline = time.monotonic() + 60
    while not Message.objects.get(pk=reply_id).chunks.exists():
        assert time.monotonic() < deadline, "no chunk was spoken"
        time.sleep(0.1)
    assert api_for(alice).post(f"{url}stop/").status_code == 200
    reply = settled(reply_id)
    assert reply.status == Message.Status.CANCELED
    assert reply.job.status == Job.Status.CANCELED
    assert reply.chunks.count() == 1
    # A new turn may start once the reply ended.
    again = api_for(alice).post(f"{url}messages/", {"text": "Again."}, format="json")
    assert again.status_code == 202


def test_an_llm_failure_fails_the_reply_and_its_job(alice, chat_worker, llm_server):
    llm_server.mode = 401
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    url = f"/api/conversations/{conversation.pk}/messages/"
    reply = settled(api_for(alice).post(url, {"text": "Hi"}, format="json").json()["id"])
    assert reply.status == Message.Status.FAILED
    assert "refused the API key" in reply.error and "the administrator" in reply.error
    assert "CHAT_" not in reply.error
    assert reply.job.status == Job.Status.FAILED and reply.job.error == reply.error
    again = api_for(alice).post(url, {"text": "Hi"}, format="json")
    assert again.status_code == 202  # a failed reply does not block the next turn
