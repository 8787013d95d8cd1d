"""Every main page of the portal, in Chromium on a phone (390×844) and a laptop (1280×800), as alice with
one of each of her things: no page is wider than its viewport, and the navigation's links can be reached
(on the phone through the menu button, by mouse and by keyboard). Screenshots of each page go to the
test's tmp_path (``screenshots/``), never into the repository."""

from __future__ import annotations

import os

import pytest

from tests.talkforge import test_browser
from tests.talkforge.test_browser import CHROMIUM, CHROMIUM_ARGS, log_in

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM}"
)

# test_browser's page: only requests to the test server, page errors recorded.
portal_page = test_browser.chromium_page


PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
NAV_LINKS = ["Dashboard", "Avatars", "Videos", "Chat", "Jobs", "Nodes", "API"]

WIDTHS = """() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                   wide: [...document.querySelectorAll('body *')]
                     .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                                  && !e.closest('.table-scroll'))
                     .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                                      + (e.className && e.className.baseVal === undefined && e.className
                                         ? '.' + String(e.className).split(' ').join('.') : ''))})"""


def pages_of(things) -> list[tuple[str, str]]:
    return [
        ("dashboard", "/"),
        ("avatars", "/avatars/"),
        ("avatar", f"/avatars/{things['avatar'].pk}/"),
        ("avatar-new", "/avatars/new/"),
        ("videos", "/videos/"),
        ("video", f"/videos/{things['video'].pk}/"),
        ("voices", "/chat/voices/"),
        ("chat", "/chat/"),
        ("conversation", f"/chat/{things['conversation'].pk}/"),
        ("jobs", "/jobs/"),
        ("job", f"/jobs/{things['job'].pk}/"),
        ("profile", "/accounts/profile/"),
        ("nodes", "/nodes/"),
        ("api-docs", "/api/docs/"),
    ]


def nav_links_reachable(page, viewport: dict, shot) -> list[str]:
    """The navigation's links that a person can see and click at this size (on a phone, after opening the
    menu with the keyboard)."""
    toggle = page.locator("#nav-toggle")
    if viewport is PHONE:
        assert toggle.is_visible(), "no menu button on a phone"
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not page.get_by_role("link", name="Avatars", exact=True).is_visible(), "menu open at first"
        toggle.focus()
        page.keyboard.press("Enter")
        assert toggle.get_attribute("aria-expanded") == "true"
    else:
        assert not toggle.is_visible(), "a menu button on a wide screen"
    reachable = []
    for name in NAV_LINKS:
        link = page.locator("#site-nav").get_by_role("link", name=name, exact=True)
        box = link.bounding_box() if link.is_visible() else None
        if box and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]:
            reachable.append(name)
    page.screenshot(path=str(shot))
    if viewport is PHONE:
        page.keyboard.press("Escape")
        assert toggle.get_attribute("aria-expanded") == "false"
    return reachable


def test_every_page_fits_a_phone_and_a_laptop_and_its_navigation_is_reachable(
    portal_page, alices_things, tmp_path
):
    pages = pages_of(alices_things)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    measured: dict[tuple[str, int], dict] = {}
    reachable: dict[int, list[str]] = {}

    with portal_page() as page:
        for viewport in (PHONE, LAPTOP):
            page.set_viewport_size(viewport)
            page.context.clear_cookies()
            page.goto("/accounts/login/")
            measured["login", viewport["width"]] = page.evaluate(WIDTHS)
            page.screenshot(path=str(shots / f"login-{viewport['width']}.png"), full_page=True)
            log_in(page, "alice", "alice-password-1")
            for name, url in pages:
                page.goto(url)
                if name == "api-docs":
                    page.wait_for_selector(".swagger-ui .info .title")
                measured[name, viewport["width"]] = page.evaluate(WIDTHS)
                page.screenshot(path=str(shots / f"{name}-{viewport['width']}.png"), full_page=True)
            page.goto("/")
            reachable[viewport["width"]] = nav_links_reachable(
                page, viewport, shots / f"menu-{viewport['width']}.png"
            )
        outside, errors = page.outside_requests, page.errors

    report = "\n".join(
        f"{name:>13} @ {width:4}: scrollWidth {m['scroll']:4} / innerWidth {m['inner']:4} {m['wide'] or ''}"
        for (name, width), m in measured.items()
    )
    print(report)
    too_wide = {key: m for key, m in measured.items() if m["scroll"] > m["inner"]}
    assert not too_wide, "pages wider than their viewport:\n" + report
    assert reachable == {390: NAV_LINKS, 1280: NAV_LINKS}
    assert outside == [] and errors == []
    assert len(list(shots.glob("*.png"))) == 2 * (len(pages) + 2)


def test_the_menu_opens_by_click_and_without_javascript_every_link_is_shown(portal_page, asgi_server, alice):
    with portal_page() as page:
        page.set_viewport_size(PHONE)
        log_in(page, "alice", "alice-password-1")
        page.click("#nav-toggle")
        page.locator("#site-nav").get_by_role("link", name="Jobs", exact=True).click()
        page.wait_for_url("**/jobs/")
        assert page.locator("#nav-toggle").get_attribute("aria-expanded") == "false"

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=asgi_server, viewport=PHONE, java_script_enabled=False)
            page = context.new_page()
            log_in(page, "alice", "alice-password-1")
            assert not page.locator("#nav-toggle").is_visible()
            for name in NAV_LINKS:
                box = page.locator("#site-nav").get_by_role("link", name=name, exact=True).bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        finally:
            browser.close()


def test_the_theme_follows_the_system_and_the_toggle_remembers_a_choice(portal_page, alice):
    with portal_page() as page:
        page.emulate_media(color_scheme="dark")
        log_in(page, "alice", "alice-password-1")
        background = "getComputedStyle(document.body).backgroundColor"
        assert page.evaluate(background) == "rgb(18, 22, 27)", "the system's dark preference"
        assert page.locator("#theme-toggle").inner_text() == "Light theme"
        page.click("#theme-toggle")
        assert page.evaluate(background) == "rgb(245, 246, 248)"
        page.reload()
        assert page.evaluate(background) == "rgb(245, 246, 248)", "the choice is remembered"
        assert page.locator("#theme-toggle").get_attribute("aria-pressed") == "false"
        assert not page.errors


def test_the_video_form_offers_only_the_chosen_avatars_checkpoints_and_the_chosen_source(portal_page, alice):
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint
    from gpu_nodes.models import Node

    node = Node.objects.create(name="n", workdir="/w")
    checkpoints = {}
    for name in ("Ada", "Bea"):
        avatar = Avatar.objects.create(
            owner=alice, name=name, slug=f"{name.lower()}-form", engine="demo", status="trained",
            video="avatars/x/x.mp4", consent_given_at=timezone.now(), consent_given_by=alice,
            consent_statement="mine",
        )  # fmt: skip
        checkpoints[name] = (avatar.pk, Checkpoint.objects.create(avatar=avatar, node=node, stage="fine",
                                                                  iteration=500, path="/p").pk)  # fmt: skip
    offered = """() => [...document.querySelectorAll('[name=checkpoint] option')]
                         .filter(o => !o.disabled && o.value).map(o => o.value)"""
    with portal_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/videos/new/?avatar={checkpoints['Ada'][0]}")
        assert page.evaluate(offered) == [str(checkpoints["Ada"][1])]
        page.select_option("[name=avatar]", str(checkpoints["Bea"][0]))
        assert page.evaluate(offered) == [str(checkpoints["Bea"][1])]
        page.check("[name=source][value=text]")
        assert not page.locator("[name=audio]").is_visible() and page.locator("[name=text]").is_visible()
        page.check("[name=source][value=audio]")
        assert page.locator("[name=audio]").is_visible() and not page.locator("[name=text]").is_visible()
        assert not page.errors


def test_the_upload_page_previews_the_chosen_clip_and_says_what_is_kept(portal_page, alice, videos):
    with portal_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto("/avatars/new/")
        assert not page.locator("#clip-preview").is_visible()
        page.set_input_files("[name=video]", str(videos["good"]))
        page.wait_for_function(
            "() => document.getElementById('clip-length').textContent.startsWith('Clip: 0 min 04 s')"
        )
        assert page.locator("#clip-warning").is_visible()  # 4 s: below the server's minimum (60 s here)
        page.fill("[name=trim_start]", "1")
        page.wait_for_function(
            "() => document.getElementById('clip-length').textContent.includes('keeping 0 min 03 s')"
        )
        assert not page.errors


def test_a_voice_recorded_in_the_browser_is_added_like_an_upload(asgi_server, alice):
    """Chromium's fake microphone (a tone) records a few seconds; the form sends it as its file and the
    server converts it into the voice's reference WAV."""
    from urllib.parse import urlparse

    from playwright.sync_api import sync_playwright

    from chat.models import Voice

    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            context = browser.new_context(base_url=asgi_server)
            context.grant_permissions(["microphone"], origin=asgi_server)
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            log_in(page, "alice", "alice-password-1")
            page.goto("/chat/voices/")
            page.fill("[name=name]", "Read aloud")
            page.click("#record-voice")
            page.wait_for_timeout(4500)
            page.click("#record-voice")
            page.wait_for_function("() => document.querySelector('[name=recording]').files.length === 1")
            page.check("[name=consent]")
            page.click("#voice-form button[type=submit]")
            page.wait_for_load_state()
            assert "Voice Read aloud added." in page.content(), page.locator("main").inner_text()[:1500]
            assert urlparse(page.url).path == "/chat/voices/" and not errors
        finally:
            browser.close()
    voice = Voice.objects.get(owner=alice)
    assert voice.name == "Read aloud" and voice.reference_info["duration"] >= 3
