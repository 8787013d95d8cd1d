"""The media links the API hands out (a video's ``urls``, an avatar's video, a voice's recording, a chat
chunk's audio and video) work for an integration with its API token, under the same ownership rules as
the API: its owner's token gets the file (byte ranges too), another user's token a 404, a bad token a
401 with the API's message. Browsers keep their session, and the anonymous are sent to log in."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_rotate
from avatars.pipeline import RENDER_VALIDATION
from chat.models import Chunk, Conversation, Message, Voice
from jobs.models import Job
from tests.chat.test_services import make_avatar
from videos.models import Video
from videos.services import GENERATE_VIDEO

# Each kind of media link, the file behind it (relative to MEDIA_ROOT) and its bytes.
KINDS = [
    "video",
    "poster",
    "video-audio",
    "download",
    "avatar-video",
    "avatar-validation",
    "avatar-au-csv",
    "voice",
    "chunk-audio",
    "chunk-video",
]


@pytest.fixture
def media(alice, settings, tmp_path) -> dict[str, tuple[str, bytes]]:
    """Alice's media of every kind, each a small file of its own bytes: kind → (URL, bytes)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ACCEL_REDIRECT = False

    def put(relative: str) -> str:
        path = Path(settings.MEDIA_ROOT) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"<{relative}> ".encode() * 20)
        return relative

    avatar = make_avatar(alice)
    avatar.video = put(f"avatars/{avatar.slug}/source.mp4")
    avatar.au_csv = put(f"avatars/{avatar.slug}/au.csv")
    avatar.save()
    Job.objects.create(
        kind=RENDER_VALIDATION, owner=alice, avatar=avatar, status=Job.Status.SUCCEEDED,
        finished_at=timezone.now(), result={"files": {"validation.mov": put("jobs/1/validation.mov")}},
    )  # fmt: skip
    video = Video.objects.create(
        owner=alice,
        avatar=avatar,
        source=Video.Source.AUDIO,
        folder="videos/1",
        audio=put("videos/1/audio.wav"),
        audio_duration=1.0,
        pose_mode=Video.PoseMode.PING_PONG,
        result=put("jobs/2/result.mp4"),
        poster=put("jobs/2/poster.jpg"),
        job=Job.objects.create(kind=GENERATE_VIDEO, owner=alice, status=Job.Status.SUCCEEDED),
    )
    voice = Voice.objects.create(
        owner=alice,
        name="Grace",
        slug=f"grace-{alice.pk}",
        reference=put(f"voices/grace-{alice.pk}/ref.wav"),
        consent_given_at=timezone.now(),
        consent_given_by=alice,
        consent_statement="ok",
    )
    conversation = Conversation.objects.create(owner=alice, avatar=avatar, voice=voice)
    reply = Message.objects.create(conversation=conversation, role="assistant", text="Hello there.")
    chunk = Chunk.objects.create(
        message=reply, index=0, text="Hello there.", audio=put(f"{conversation.folder}/chunk-000.wav"),
        video=put(f"{conversation.folder}/chunk-000.mp4"),
    )  # fmt: skip
    files = {
        "video": (f"/videos/{video.pk}/media/video/", video.result),
        "poster": (f"/videos/{video.pk}/media/poster/", video.poster),
        "video-audio": (f"/videos/{video.pk}/media/audio/", video.audio),
        "download": (f"/videos/{video.pk}/media/video/?download=1", video.result),
        "avatar-video": (f"/avatars/{avatar.pk}/media/video/", avatar.video),
        "avatar-validation": (f"/avatars/{avatar.pk}/media/validation/", "jobs/1/validation.mov"),
        "avatar-au-csv": (f"/avatars/{avatar.pk}/media/au_csv/", avatar.au_csv),
        "voice": (f"/chat/media/voice/{voice.pk}/", voice.reference),
        "chunk-audio": (f"/chat/media/chunk/{chunk.pk}/audio/", chunk.audio),
        "chunk-video": (f"/chat/media/chunk/{chunk.pk}/video/", chunk.video),
    }
    return {
        kind: (url, (Path(settings.MEDIA_ROOT) / relative).read_bytes())
        for kind, (url, relative) in files.items()
    }


def with_token(key: str, scheme: str = "Token") -> dict:
    return {"HTTP_AUTHORIZATION": f"{scheme} {key}"}


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_api_links_to_these_media_kinds(client, alice, media):
    """The URLs tested here are the ones the API hands out."""
    client.force_login(alice)
    video = client.get("/api/videos/").json()["results"][0]
    assert {media[kind][0] for kind in ("video", "poster", "video-audio", "download")} <= {
        *video["urls"].values()
    }
    avatar = client.get("/api/avatars/").json()["results"][0]
    assert media["avatar-video"][0] in avatar.values()
    voice = client.get("/api/voices/").json()["results"][0]
    assert voice["reference_url"] == media["voice"][0]


@pytest.mark.parametrize("kind", KINDS)
def test_the_owners_token_gets_the_file_with_byte_ranges(alice, media, kind):
    url, content = media[kind]
    api = Client()
    key = api_token_rotate(user=alice)
    whole = api.get(url, **with_token(key))
    assert whole.status_code == 200, whole.content
    assert body(whole) == content
    assert whole["Accept-Ranges"] == "bytes"
    assert "Authorization" in whole["Vary"]
    part = api.get(url, HTTP_RANGE="bytes=3-12", **with_token(key, "Bearer"))
    assert part.status_code == 206
    assert body(part) == content[3:13]
    assert part["Content-Range"] == f"bytes 3-12/{len(content)}"


@pytest.mark.parametrize("kind", KINDS)
def test_another_users_token_gets_404(bob, media, kind):
    url, _ = media[kind]
    response = Client().get(url, **with_token(api_token_rotate(user=bob)))
    assert response.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token not-a-real-key", "Invalid or revoked API token: make a new one on your profile page."),
        ("Bearer not-a-real-key", "Invalid or revoked API token: make a new one on your profile page."),
        ("Token", "Use the header 'Authorization: Token <your API token>'."),
    ],
)
def test_a_bad_token_is_a_401_not_the_login_page(alice, media, kind, header, message):
    url, _ = media[kind]
    client = Client()
    client.force_login(alice)  # even with a session: a token that was sent and is wrong is refused
    response = client.get(url, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json() == {"detail": message}
    assert response["WWW-Authenticate"] == "Token"
    assert "Location" not in response


def test_a_revoked_token_is_refused(alice, media):
    url, _ = media["video"]
    key = api_token_rotate(user=alice)
    api_token_rotate(user=alice)
    assert Client().get(url, **with_token(key)).status_code == 401


@pytest.mark.parametrize("kind", KINDS)
def test_browsers_keep_their_session_and_the_login_redirect(alice, bob, media, kind):
    url, content = media[kind]
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/?next=")
    owner = Client()
    owner.force_login(alice)
    assert body(owner.get(url)) == content
    # A password-protected proxy makes browsers send Basic credentials: the session still decides.
    assert body(owner.get(url, HTTP_AUTHORIZATION="Basic YWxpY2U6eA==")) == content
    other = Client()
    other.force_login(bob)
    assert other.get(url).status_code == 404


def test_a_download_comes_as_an_attachment_to_a_token_too(alice, media):
    url, _ = media["download"]
    response = Client().get(url, **with_token(api_token_rotate(user=alice)))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
