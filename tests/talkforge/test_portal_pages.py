"""The portal's small promises (issue 13): a favicon, a CPU slot named once, a confirmation before a
conversation or a voice is deleted (and deletion by POST only), and people see their world, not the
server's: no setting names on their pages; staff may see them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chat.models import Conversation, Voice


@pytest.fixture
def client_of(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


def test_favicon_is_linked_and_favicon_ico_is_answered(client, alice):
    page = client.get(reverse("login")).content.decode()
    assert '<link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">' in page
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"] == "/static/img/favicon.svg"
    assert client.get(response["Location"]).status_code == 200


def test_node_page_names_a_cpu_slot_once(client_of, alice, make_node):
    make_node()
    page = client_of(alice).get(reverse("node-list")).content.decode()
    assert "<div>CPU</div>" in page and "CPU CPU" not in page


def test_deleting_a_conversation_or_a_voice_asks_first_and_takes_a_post(client_of, alice, alices_things):
    client = client_of(alice)
    conversation, voice = alices_things["conversation"], alices_things["voice"]
    page = client.get(reverse("chat-conversation", args=[conversation.pk])).content.decode()
    assert f'action="/chat/{conversation.pk}/delete/" class="inline" onsubmit="return confirm(' in page
    page = client.get(reverse("chat-voices")).content.decode()
    assert f'action="/chat/voices/{voice.pk}/delete/" class="inline" data-confirm="Delete the voice' in page
    assert client.get(reverse("chat-delete", args=[conversation.pk])).status_code == 405
    assert client.get(reverse("chat-voice-delete", args=[voice.pk])).status_code == 405
    assert (
        Conversation.objects.filter(pk=conversation.pk).exists()
        and Voice.objects.filter(pk=voice.pk).exists()
    )


def test_chat_pages_speak_of_the_platform_not_its_settings_and_staff_see_them(
    client_of, alice, staff, alices_things, settings
):
    settings.CHAT_XTTS_DIR, settings.CHAT_LLM_API_KEY = "", ""
    conversation = alices_things["conversation"]
    for url in (reverse("chat-voices"), reverse("chat-conversation", args=[conversation.pk])):
        page = client_of(alice).get(url).content.decode()
        assert (
            "Voice cloning is not set up on this platform yet" in page
            or "voice cloning is not set up" in page
        )
        assert "CHAT_" not in page and "espeak" not in page, url
    page = client_of(alice).get(reverse("chat-conversation", args=[conversation.pk])).content.decode()
    assert "the platform's API key" not in page  # none is configured

    page = client_of(staff).get(reverse("chat-voices")).content.decode()
    assert "Staff: CHAT_XTTS_DIR is not set" in page


def test_a_media_error_names_no_path_on_the_server(tmp_path, caplog):
    from avatars.media import probe, probe_audio
    from core.errors import ServiceError

    garbage = tmp_path / "upload-tmp.mp4"
    garbage.write_bytes(b"not a video at all")
    for read in (probe, probe_audio):
        with pytest.raises(ServiceError) as caught:
            read(garbage)
        assert "could not be read" in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert str(garbage) in caplog.text  # the operator's log keeps it


def test_an_avatar_page_shows_its_datasets_node_but_not_the_path_there(client_of, alice, alices_things):
    from avatars.models import DatasetCopy

    avatar, node = alices_things["avatar"], alices_things["node"]
    DatasetCopy.objects.create(
        avatar=avatar, node=node, path=f"{node.workdir}/data/secret-folder", complete=True
    )
    page = client_of(alice).get(reverse("avatar-detail", args=[avatar.pk])).content.decode()
    assert f"On {node.name}" in page and "secret-folder" not in page


def test_the_dashboard_is_built_around_the_persons_avatars_and_their_next_step(client, alice, bob):
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint, Evaluation
    from gpu_nodes.models import Node

    client.force_login(alice)
    empty = client.get("/").content.decode()
    assert 'id="create-first"' in empty and '<details class="card" id="demo" open>' in empty

    def avatar(owner, name, status):
        return Avatar.objects.create(
            owner=owner, name=name, slug=f"{name.lower()}-{owner.pk}", engine="demo", status=status,
            video="avatars/x/x.mp4", consent_given_at=timezone.now(), consent_given_by=owner,
            consent_statement="mine",
        )  # fmt: skip

    trained = avatar(alice, "Ada", Avatar.Status.TRAINED)
    node = Node.objects.create(name="n", workdir="/w")
    checkpoint = Checkpoint.objects.create(avatar=trained, node=node, stage="fine", iteration=500, path="/p")
    Evaluation.objects.create(avatar=trained, checkpoint=checkpoint, iteration=500, psnr=30.5, ssim=0.91,
                              frames=3, rendered_frames=3, reference_frames=3)  # fmt: skip
    ready = avatar(alice, "Bea", Avatar.Status.READY_TO_TRAIN)
    avatar(bob, "Bobs", Avatar.Status.TRAINED)
    page = client.get("/").content.decode()
    assert "Bobs" not in page and 'id="create-first"' not in page
    ada = page[page.index(f'data-avatar="{trained.pk}"') :].split("</li>")[0]
    assert (
        "30.50 dB PSNR" in ada
        and f"/videos/new/?avatar={trained.pk}" in ada
        and f"/chat/new/?avatar={trained.pk}" in ada
    )
    bea = page[page.index(f'data-avatar="{ready.pk}"') :].split("</li>")[0]
    assert "Train it" in bea and "No quality figures yet" in bea
    form = client.get(f"/chat/new/?avatar={trained.pk}").context["form"]
    assert str(form["avatar"].value()) == str(trained.pk)


def test_every_upload_form_states_its_limits_before_the_upload(client_of, alice, settings):
    settings.CHAT_VOICE_MIN_SECONDS, settings.CHAT_VOICE_MAX_SECONDS = 5.0, 45.0
    settings.MAX_UPLOAD_BYTES = 300 * 1024**2
    client = client_of(alice)

    def page(name: str) -> str:  # sizes are written with a no-break space (filesizeformat)
        return " ".join(client.get(reverse(name)).content.decode().replace("\xa0", " ").split())

    voices = page("chat-voices")
    assert (
        "5–45 s of the person speaking" in voices
        and "WAV, MP3, M4A, OGG, FLAC or WebM, up to 300.0 MB" in voices
    )
    assert 'accept="audio/*,video/webm"' in voices
    video = page("video-new")
    assert "WAV, MP3, M4A, OGG, FLAC or WebM, up to 300.0 MB" in video and "characters" in video
    avatar = page("avatar-new")
    assert "300.0 MB" in avatar and "minutes" in avatar
