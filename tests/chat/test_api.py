"""The chat REST API and its media: voices, conversations (write-only API key), messages with chunks.
Another user's voice, conversation or chunk is a 404 everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.models import Chunk, Conversation, Message
from tests.chat.test_services import make_avatar, tone, upload

SECRET = "sk-alice-secret-key-0123456789"


@pytest.fixture
def recording(tmp_path) -> Path:
    return tone(tmp_path / "voice.m4a", 4, "-c:a", "aac")


@pytest.fixture
def api(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


@pytest.fixture
def alices(alice, recording):
    """Alice's voice, conversation (with her own API key) and one reply with a spoken chunk."""
    voice = services.voice_create(owner=alice, name="Grace", recording=upload(recording), consent=True)
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), voice=voice, llm_api_key=SECRET
    )
    Message.objects.create(conversation=conversation, role="user", text="Hi!")
    reply = Message.objects.create(conversation=conversation, role="assistant", text="Hello there.")
    folder = Path(settings.MEDIA_ROOT) / conversation.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chunk-000.wav").write_bytes((Path(settings.MEDIA_ROOT) / voice.reference).read_bytes())
    chunk = Chunk.objects.create(
        message=reply, index=0, text="Hello there.", audio=f"{conversation.folder}/chunk-000.wav"
    )
    return {"voice": voice, "conversation": conversation, "reply": reply, "chunk": chunk}


def test_a_voice_is_created_by_upload_and_played_to_its_owner_only(api, alice, bob, recording):
    client = api(alice)
    with open(recording, "rb") as file:
        response = client.post(
            "/api/voices/", {"name": "Grace", "language": "de", "recording": file, "consent": "true"}
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Grace" and body["language"] == "de"
    assert body["reference_info"]["sample_rate"] == 22050
    assert body["consent_statement"] == services.VOICE_CONSENT_STATEMENT
    assert "reference" not in body  # no paths on the server
    audio = client.get(body["reference_url"])
    assert audio.status_code == 200
    assert b"".join(audio.streaming_content)[:4] == b"RIFF"
    assert client.get("/api/voices/").json()["results"][0]["id"] == body["id"]

    other = api(bob)
    assert other.get(body["reference_url"]).status_code == 404
    assert other.get(f"/api/voices/{body['id']}/").status_code == 404
    assert other.delete(f"/api/voices/{body['id']}/").status_code == 404
    assert other.get("/api/voices/").json()["results"] == []


def test_a_voice_without_consent_or_too_short_is_refused(api, alice, tmp_path):
    client = api(alice)
    short = tone(tmp_path / "short.wav", 1)
    with open(short, "rb") as file:
        response = client.post("/api/voices/", {"name": "Grace", "recording": file, "consent": "true"})
    assert response.status_code == 400
    assert "a voice needs at least 3 s" in response.json()["detail"]
    with open(short, "rb") as file:
        response = client.post("/api/voices/", {"name": "Grace", "recording": file, "consent": "false"})
    assert response.status_code == 400
    assert "agreed to have their voice cloned" in response.json()["detail"]


def test_a_conversation_keeps_its_api_key_secret(api, alice, alices):
    client = api(alice)
    avatar = make_avatar(alice, "Eve")
    response = client.post(
        "/api/conversations/",
        {"avatar": avatar.pk, "voice": alices["voice"].pk, "llm_api_key": "sk-new-secret", "language": "zh",
         "system_prompt": "Be brief.", "llm_model": "glm-4-plus"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_own_api_key"] is True
    assert "llm_api_key" not in body and "sk-new-secret" not in response.content.decode()
    conversation = Conversation.objects.get(pk=body["id"])
    assert services.conversation_llm_config(conversation).api_key == "sk-new-secret"

    url = f"/api/conversations/{body['id']}/"
    response = client.patch(url, {"title": "Talk"}, content_type="application/json")
    assert response.json()["has_own_api_key"] is True  # left out: kept
    response = client.patch(url, {"llm_api_key": "", "voice": None}, content_type="application/json")
    assert response.json()["has_own_api_key"] is False
    assert response.json()["voice"] is None
    response = client.patch(
        url, {"avatar": alices["conversation"].avatar_id}, content_type="application/json"
    )
    assert response.status_code == 400
    for page in ("/api/conversations/", f"/api/conversations/{alices['conversation'].pk}/"):
        assert SECRET not in client.get(page).content.decode()


def test_a_conversation_refuses_someone_elses_avatar_or_voice(api, alice, bob, alices):
    client = api(bob)
    bobs_avatar = make_avatar(bob, "Bobby")
    response = client.post(
        "/api/conversations/", {"avatar": alices["conversation"].avatar_id}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "You have no avatar with id" in response.json()["detail"]
    response = client.post(
        "/api/conversations/", {"avatar": bobs_avatar.pk, "voice": alices["voice"].pk},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "You have no voice with id" in response.json()["detail"]
    assert not Conversation.objects.filter(owner=bob).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/conversations/{conversation}/"),
        ("patch", "/api/conversations/{conversation}/"),
        ("delete", "/api/conversations/{conversation}/"),
        ("get", "/api/conversations/{conversation}/messages/"),
        ("get", "/chat/media/chunk/{chunk}/audio/"),
        ("get", "/chat/media/voice/{voice}/"),
    ],
)
def test_bob_gets_404_for_alices_things(api, bob, alices, method, path):
    url = path.format(**{name: obj.pk for name, obj in alices.items()})
    response = getattr(api(bob), method)(url, content_type="application/json")
    assert response.status_code == 404
    assert Conversation.objects.filter(pk=alices["conversation"].pk).exists()


def test_messages_come_in_order_with_their_chunks_in_constant_queries(api, alice, alices):
    client = api(alice)
    conversation = alices["conversation"]
    url = f"/api/conversations/{conversation.pk}/messages/"

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200
        return len(captured)

    few = queries()
    for index in range(5):
        reply = Message.objects.create(conversation=conversation, role="assistant", text=f"reply {index}")
        for chunk in range(3):
            Chunk.objects.create(message=reply, index=chunk, text=f"{index}.{chunk}")
    assert queries() == few
    results = client.get(url).json()["results"]
    assert [m["role"] for m in results[:2]] == ["user", "assistant"]
    first_reply = results[1]
    assert first_reply["chunks"][0]["audio_url"] == f"/chat/media/chunk/{alices['chunk'].pk}/audio/"
    assert [c["index"] for c in results[-1]["chunks"]] == [0, 1, 2]
    audio = client.get(first_reply["chunks"][0]["audio_url"])
    assert audio.status_code == 200


def test_deleting_a_conversation_removes_its_files(api, alice, alices):
    folder = Path(settings.MEDIA_ROOT) / alices["conversation"].folder
    assert folder.is_dir()
    response = api(alice).delete(f"/api/conversations/{alices['conversation'].pk}/")
    assert response.status_code == 204
    assert not folder.exists()
    assert not Message.objects.exists()
