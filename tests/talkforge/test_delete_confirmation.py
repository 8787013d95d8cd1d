"""Every delete in the portal asks first, with script (the button's dialog) or without (a page that asks):
avatars, videos, voices, conversations (core/http.py delete_confirmation, static/js/confirm.js)."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from avatars.models import Avatar
from chat.models import Conversation, Voice
from tests.talkforge.test_browser import CHROMIUM, log_in
from videos.models import Video

CASES = {  # name: (URL name of the delete, model, URL name of the page with the button, its marker)
    "avatar": ("avatar-delete", Avatar, "avatar-detail", "Delete the avatar Ada?"),
    "video": ("video-delete", Video, "video-detail", "Delete video #"),
    "voice": ("chat-voice-delete", Voice, "chat-voices", "Delete the voice Her voice?"),
    "conversation": ("chat-delete", Conversation, "chat-conversation", "Delete the conversation “private”?"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(CASES))
def test_a_delete_without_confirmation_asks_and_deletes_nothing_then_deletes_when_confirmed(
    client, alice, bob, alices_things, name
):
    url_name, model, _, title = CASES[name]
    thing = alices_things[name]
    url = reverse(url_name, args=[thing.pk])
    client.force_login(bob)
    assert client.post(url).status_code == 404 and client.post(url, {"confirmed": "yes"}).status_code == 404
    client.force_login(alice)
    page = client.post(url)
    body = page.content.decode()
    assert page.status_code == 200 and title in body and "cannot be undone" in body
    assert f'<form method="post" action="{url}"' in body and 'name="confirmed" value="yes"' in body
    assert model.objects.filter(pk=thing.pk).exists()
    assert (
        client.post(url, {"confirmed": "no"}).status_code == 200
        and model.objects.filter(pk=thing.pk).exists()
    )
    assert client.post(url, {"confirmed": "yes"}).status_code == 302
    assert not model.objects.filter(pk=thing.pk).exists()


@pytest.mark.django_db
def test_the_delete_buttons_ask_with_the_browser_s_dialog(client, alice, alices_things):
    client.force_login(alice)
    for name in ("avatar", "video", "voice"):
        url_name, _, page_name, _ = CASES[name]
        thing = alices_things[name]
        page_args = [] if page_name == "chat-voices" else [thing.pk]
        page = client.get(reverse(page_name, args=page_args)).content.decode()
        assert f'action="{reverse(url_name, args=[thing.pk])}"' in page
        assert (
            'data-confirm="Delete ' in page.split(f'action="{reverse(url_name, args=[thing.pk])}"')[1][:200]
        )
    assert "js/confirm.js" in page


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")
def test_deleting_in_chromium_asks_once_with_script_and_on_a_page_without(asgi_server, alice, alices_things):
    """With script: dismissing the dialog keeps the voice, accepting deletes it at once. Without script:
    the server's page asks, and its button deletes."""
    from playwright.sync_api import sync_playwright

    from tests.talkforge.test_browser import CHROMIUM_ARGS

    first, second = alices_things["voice"], Voice.objects.create(
        owner=alice, name="Second", slug=f"second-{alice.pk}", reference="voices/y/ref.wav",
        consent_given_at=alices_things["voice"].consent_given_at, consent_given_by=alice,
        consent_statement="ok",
    )  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(base_url=asgi_server).new_page()
            log_in(page, "alice", "alice-password-1")
            page.goto("/chat/voices/")
            dialogs = []
            page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.click(f'form[action="/chat/voices/{first.pk}/delete/"] button')
            page.wait_for_timeout(300)
            assert (
                dialogs and "Delete the voice Her voice" in dialogs[0] and page.url.endswith("/chat/voices/")
            )
            page.once("dialog", lambda dialog: dialog.accept())
            page.click(f'form[action="/chat/voices/{first.pk}/delete/"] button')
            page.wait_for_selector(f'form[action="/chat/voices/{first.pk}/delete/"]', state="detached")
            assert page.locator(f'form[action="/chat/voices/{second.pk}/delete/"]').count() == 1

            plain = browser.new_context(base_url=asgi_server, java_script_enabled=False).new_page()
            log_in(plain, "alice", "alice-password-1")
            plain.goto("/chat/voices/")
            plain.click(f'form[action="/chat/voices/{second.pk}/delete/"] button')
            plain.wait_for_selector("#confirm-delete")
            assert "Delete the voice Second?" in plain.locator("h1").inner_text()
            plain.click("#confirm")
            plain.wait_for_url("**/chat/voices/")
            assert plain.locator(f'form[action="/chat/voices/{second.pk}/delete/"]').count() == 0
        finally:
            browser.close()
    assert not Voice.objects.filter(pk__in=[first.pk, second.pk]).exists()
