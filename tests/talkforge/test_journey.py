"""The whole path of a new person, in Chromium against a real server and worker: sign up → an avatar from a
short clip → train it on the demo engine → its figures → a video from text and one from an audio file → a
voice recorded in the browser (Chromium's fake microphone) → a chat. Every page it reaches is checked at
1280 px and at 390 px: nothing wider than the viewport, and axe-core finds no serious or critical
violation. The avatar page reaches its trained state by itself (no reload). Screenshots of each step go to
JOURNEY_SCREENSHOTS if set, else to the test's tmp_path, never into the repository."""

# ruff: noqa: F811 - pytest fixtures imported from the other tests are parameters here

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.chat.test_asr import speech_wav  # noqa: F401
from tests.chat.test_llm import llm_server  # noqa: F401
from tests.talkforge.test_accessibility import serious_violations
from tests.talkforge.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.talkforge.test_responsive import LAPTOP, PHONE, WIDTHS

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM}"
)

REPLY = ["Hello, I am your avatar", ". Nice to meet you!"]


@pytest.fixture
def journey_env(monkeypatch):
    """Read by the server and the worker at start: short clips allowed, few frames sampled."""
    monkeypatch.setenv("AVATAR_MIN_SECONDS", "2")
    monkeypatch.setenv("QUALITY_SAMPLE_FRAMES", "6")


@pytest.fixture
def browser_page(journey_env, asgi_server, make_node, processes, llm_server, speech_wav, tmp_path):
    node = make_node()
    llm_server.pieces, llm_server.delay = REPLY, 0.05
    processes.worker(
        node.name, CHAT_LLM_BASE_URL=f"http://127.0.0.1:{llm_server.server_port}/v1/", CHAT_XTTS_DIR="",
        CHAT_SENTENCE_MIN_CHARS=10,
    )  # fmt: skip

    @contextlib.contextmanager
    def open_page():
        from playwright.sync_api import sync_playwright

        server = urlparse(asgi_server).netloc
        microphone = [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech_wav}",
        ]  # fmt: skip
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *microphone])
            try:
                context = browser.new_context(base_url=asgi_server, viewport=LAPTOP)
                outside: list[str] = []

                def only_local(route):
                    if urlparse(route.request.url).netloc not in ("", server):
                        outside.append(route.request.url)
                        route.abort()
                    else:
                        route.continue_()

                context.route("**/*", only_local)
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.errors, page.outside_requests = [], outside
                page.on("pageerror", lambda error: page.errors.append(str(error)))
                yield page
            finally:
                browser.close()

    return open_page


class Checker:
    """Checks the page as it is now at both widths and keeps a screenshot of each."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.problems = page, folder, []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        for viewport in (PHONE, LAPTOP):
            self.page.set_viewport_size(viewport)
            self.page.wait_for_timeout(100)
            widths = self.page.evaluate(WIDTHS)
            if widths["scroll"] > widths["inner"]:
                self.problems.append(
                    f"{name} @ {viewport['width']}: {widths['scroll']} px wide {widths['wide']}"
                )
            for violation in serious_violations(self.page):
                self.problems.append(f"{name} @ {viewport['width']}: {violation['id']} {violation['nodes']}")
            self.page.screenshot(path=str(self.folder / f"{name}-{viewport['width']}.png"))


def test_a_new_person_walks_from_sign_up_to_a_chat(browser_page, videos, speech_wav, tmp_path):
    shots = Path(os.environ.get("JOURNEY_SCREENSHOTS") or tmp_path / "journey")
    with browser_page() as page:
        check = Checker(page, shots)
        page.goto("/")
        check("landing")

        page.goto("/accounts/signup/")
        page.fill("#id_username", "newcomer")
        page.fill("#id_email", "newcomer@example.org")
        page.fill("#id_password1", "a-long-journey-1")
        page.fill("#id_password2", "a-long-journey-1")
        page.click("main form button[type=submit]")
        page.wait_for_url("**/")
        check("dashboard-empty")

        page.goto("/avatars/new/")
        page.fill("#id_name", "Nova")
        page.select_option("#id_engine", "demo")
        page.set_input_files("#id_video", str(videos["good"]))
        page.check("#id_consent")
        check("avatar-new")
        page.click("#avatar-form button[type=submit]")
        page.wait_for_url(re.compile(r"/avatars/\d+/$"), timeout=90_000)
        avatar_url = page.url

        page.fill('input[name="iterations"]', "20")
        page.fill('input[name="seconds"]', "1")
        page.click("#train")
        page.wait_for_url(avatar_url)
        page.evaluate("window.__marker = 1")
        page.wait_for_selector("#pipeline", timeout=30_000)
        check("avatar-training")
        # The pipeline runs to its evaluation; the page follows it by itself.
        page.wait_for_selector("#evaluations", timeout=150_000)
        page.wait_for_selector("#frame-chart polyline", timeout=10_000)
        assert page.evaluate("window.__marker") == 1, "the avatar page was reloaded"
        assert page.locator("#generate").is_visible()
        check("avatar-trained")
        for part in ("training", "quality-figures"):  # the parts the README shows
            page.locator(f"#{part}").screenshot(path=str(shots / f"part-{part}.png"))

        page.click("#generate")
        page.wait_for_url("**/videos/new/**")
        page.check('input[name="source"][value="text"]')
        page.fill("#id_text", "Hello, this is my first talking video.")
        check("video-new")
        page.click("#video-form button[type=submit]")
        page.wait_for_url(re.compile(r"/videos/\d+/$"))
        page.wait_for_selector("#result video", timeout=120_000)
        check("video-from-text")

        page.goto("/videos/new/")
        page.check('input[name="source"][value="audio"]')
        page.set_input_files("#id_audio", str(speech_wav))
        page.click("#video-form button[type=submit]")
        page.wait_for_url(re.compile(r"/videos/\d+/$"))
        page.wait_for_selector("#result video", timeout=120_000)
        check("video-from-audio")

        page.goto("/chat/voices/")
        page.fill("#id_name", "My voice")
        page.click("#record-voice")
        page.wait_for_timeout(4500)
        page.click("#record-voice")
        page.wait_for_selector("#voice-recorder audio:not([hidden])")
        page.check("#id_consent")
        page.click("#voice-form button[type=submit]")
        page.wait_for_selector("text=Voice My voice added.")
        check("voice-recorded")

        page.goto("/chat/new/")
        check("chat-new")
        page.click("main form button[type=submit]")
        page.wait_for_url(re.compile(r"/chat/\d+/$"))
        page.fill("#talk-text", "Hello!")
        page.click("#talk-form button[type=submit]")
        page.wait_for_function("window.TalkforgeChat && window.TalkforgeChat.replies.length === 1")
        page.wait_for_function("window.TalkforgeChat.replies[0].status === 'done'", timeout=90_000)
        check("chat")
        problems, errors, outside = check.problems, page.errors, page.outside_requests

    assert problems == [], "\n".join(problems)
    assert errors == [] and outside == []
    assert len(list(shots.glob("*.png"))) == 2 * 11 + 2
