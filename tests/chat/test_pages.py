"""The chat pages: voices (upload with consent), conversations (create, history, settings with a
write-only API key, delete). Another user's conversation or voice is a 404."""

# ruff: noqa: F811 - pytest fixtures imported from the API tests are parameters here

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.models import Chunk, Conversation, Message, Voice
from tests.chat.test_api import SECRET, alices, recording  # noqa: F401
from tests.chat.test_services import make_avatar, tone


@pytest.fixture
def logged_in(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


def test_a_voice_is_added_on_the_voices_page(logged_in, alice, tmp_path, settings):
    settings.CHAT_XTTS_DIR = ""
    client = logged_in(alice)
    page = client.get("/chat/voices/")
    assert "Voice cloning is not set up on this platform yet" in page.content.decode()
    assert "CHAT_XTTS_DIR" not in page.content.decode()  # staff see it (test_portal_pages)
    with open(tone(tmp_path / "v.ogg", 5, "-c:a", "libvorbis"), "rb") as file:
        response = client.post(
            "/chat/voices/", {"name": "Grace", "language": "en", "recording": file, "consent": "on"}
        )
    assert response.status_code == 302
    voice = Voice.objects.get(owner=alice)
    page = client.get("/chat/voices/").content.decode()
    assert "Grace" in page and f"/chat/media/voice/{voice.pk}/" in page


def test_a_voice_without_consent_is_refused_on_the_page(logged_in, alice, tmp_path):
    with open(tone(tmp_path / "v.wav", 5), "rb") as file:
        response = logged_in(alice).post(
            "/chat/voices/", {"name": "Grace", "language": "en", "recording": file}
        )
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not Voice.objects.exists()


def test_a_conversation_is_created_with_own_avatars_only(logged_in, alice, bob):
    mine, theirs = make_avatar(alice), make_avatar(bob, "Bobby")
    client = logged_in(alice)
    form = client.get("/chat/new/").content.decode()
    assert f'value="{mine.pk}"' in form and f'value="{theirs.pk}"' not in form
    response = client.post("/chat/new/", {"avatar": theirs.pk, "language": "en"})
    assert response.status_code == 200 and not Conversation.objects.exists()
    response = client.post(
        "/chat/new/", {"avatar": mine.pk, "language": "", "title": "Hello", "llm_api_key": "sk-page-secret"}
    )
    conversation = Conversation.objects.get(owner=alice)
    assert response.status_code == 302 and response.url == f"/chat/{conversation.pk}/"
    assert services.conversation_llm_config(conversation).api_key == "sk-page-secret"
    assert "sk-page-secret" not in client.get(response.url).content.decode()


def test_the_history_shows_chunks_timings_and_failures(logged_in, alice, alices):
    conversation, reply = alices["conversation"], alices["reply"]
    reply.timings = {"whole_reply": 2.5, "llm_first_token": 0.4, "tts_first_audio": 0.9}
    reply.voice_engine, reply.voice_note = "espeak-ng", "voice cloning is not set up on this platform yet"
    reply.save()
    Message.objects.create(conversation=conversation, role="user", text="And then?")
    Message.objects.create(
        conversation=conversation, role="assistant", status="failed", error="The LLM service refused the key."
    )
    page = logged_in(alice).get(f"/chat/{conversation.pk}/").content.decode()
    assert f"/chat/media/chunk/{alices['chunk'].pk}/audio/" in page
    # In the order the stages happen, in words a person reads.
    assert (
        page.index('data-key="llm_first_token">first word thought 0.40 s')
        < page.index('data-key="tts_first_audio">first audio 0.90 s')
        < page.index('data-key="whole_reply">whole reply 2.50 s')
    )
    assert "Spoken by the standard voice: voice cloning is not set up" in page
    assert "The LLM service refused the key." in page
    assert SECRET not in page


def test_settings_keep_replace_or_remove_the_api_key(logged_in, alice, alices):
    conversation = alices["conversation"]
    client = logged_in(alice)
    url = f"/chat/{conversation.pk}/"
    base = {"voice": alices["voice"].pk, "language": "de", "title": "Renamed"}
    assert client.post(url, base).status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Renamed" and conversation.language == "de"
    assert services.conversation_llm_config(conversation).api_key == SECRET  # left empty: kept
    client.post(url, {**base, "llm_api_key": "sk-replaced"})
    conversation.refresh_from_db()
    assert services.conversation_llm_config(conversation).api_key == "sk-replaced"
    client.post(url, {**base, "remove_api_key": "on"})
    conversation.refresh_from_db()
    assert not conversation.has_own_api_key


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/chat/{conversation}/"),
        ("post", "/chat/{conversation}/"),
        ("post", "/chat/{conversation}/delete/"),
        ("post", "/chat/voices/{voice}/delete/"),
    ],
)
def test_bob_gets_404_on_alices_pages(logged_in, bob, alices, method, path):
    url = path.format(**{name: obj.pk for name, obj in alices.items()})
    assert getattr(logged_in(bob), method)(url).status_code == 404
    assert Conversation.objects.filter(pk=alices["conversation"].pk).exists()
    assert Voice.objects.filter(pk=alices["voice"].pk).exists()


def test_deleting_on_the_pages_removes_files(logged_in, alice, alices):
    client = logged_in(alice)
    voice_folder = Path(settings.MEDIA_ROOT) / alices["voice"].folder
    conversation_folder = Path(settings.MEDIA_ROOT) / alices["conversation"].folder
    assert client.post(f"/chat/voices/{alices['voice'].pk}/delete/", {"confirmed": "yes"}).status_code == 302
    assert not voice_folder.exists()
    assert client.post(f"/chat/{alices['conversation'].pk}/delete/", {"confirmed": "yes"}).status_code == 302
    assert not conversation_folder.exists()
    assert not Chunk.objects.exists()


def test_the_history_page_costs_the_same_queries_for_longer_conversations(logged_in, alice, alices):
    client = logged_in(alice)
    url = f"/chat/{alices['conversation'].pk}/"

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    few = queries()
    for index in range(6):
        reply = Message.objects.create(conversation=alices["conversation"], role="assistant", text=str(index))
        Chunk.objects.create(message=reply, index=0, text=str(index))
    assert queries() == few
