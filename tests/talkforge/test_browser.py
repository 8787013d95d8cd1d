"""The portal in a real browser (Chromium through Playwright) against a real server and worker: log in,
start a demo job, watch it finish live over the websocket without reloading the page."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from urllib.parse import urlparse

import pytest

from avatars.engines.console import parse_bar
from jobs.models import Job

CHROMIUM = "/usr/bin/chromium"
JOB_PAGE = re.compile(r"/jobs/(\d+)/$")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM} (apt install chromium)"
)


@pytest.fixture
def chromium_page(asgi_server, tmp_path):
    """Opens a fresh Chromium page that may talk to the test server only; any other request is recorded
    and refused (assets must be served locally).

    Playwright's sync API keeps an event loop in this thread while it is open, and Django refuses ORM
    calls under a running loop: tests touch the database before opening the page and after closing it."""

    @contextlib.contextmanager
    def open_page():
        from playwright.sync_api import sync_playwright

        server = urlparse(asgi_server).netloc
        outside: list[str] = []

        def only_local(route):
            url = urlparse(route.request.url)
            if url.scheme in ("http", "https", "ws", "wss") and url.netloc != server:
                outside.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(base_url=asgi_server)
                context.route("**/*", only_local)
                page = context.new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.outside_requests = outside
                page.errors = errors
                try:
                    yield page
                finally:
                    page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            finally:
                browser.close()

    return open_page


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/")


def test_demo_job_runs_live_in_the_browser_without_reloading(
    chromium_page, make_node, processes, alice, tmp_path
):
    make_node()
    worker = processes.worker("local")

    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        assert page.locator("h1").inner_text() == "Your avatars"  # the dashboard
        page.fill("#id_seconds", "4")
        page.fill("#id_iterations", "60")
        page.fill("#id_coarse_iterations", "30")
        page.click("#start-demo")
        page.wait_for_url(re.compile(r"/jobs/\d+/$|/$"))
        page.wait_for_load_state()
        if not JOB_PAGE.search(page.url):
            # Known product bug (test_starting_a_demo_job_lands_on_its_page): the dashboard's own socket
            # can reload it before the redirect lands. Go to the job from the dashboard then.
            page.click("#active-jobs a")
        page.wait_for_url(JOB_PAGE)
        job_id = int(JOB_PAGE.search(page.url).group(1))

        # From here on the page must update itself: mark this document, record every progress value shown.
        page.evaluate(
            """() => {
                window.__marker = 1;
                window.__progress = [];
                const bar = document.querySelector('[data-progress-for]');
                new MutationObserver(() => window.__progress.push(Number(bar.getAttribute('aria-valuenow'))))
                    .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
            }"""
        )
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))

        page.wait_for_function(
            """() => document.querySelector('[data-progress-for]').getAttribute('aria-valuenow') === '100'
                     && document.querySelector('[data-field="status"]').textContent.trim() === 'succeeded'""",
            timeout=90_000,
        )
        page.wait_for_function(
            "() => document.getElementById('log').textContent.includes('Training complete.')", timeout=10_000
        )

        assert page.evaluate("window.__marker") == 1, "the page was reloaded"
        assert navigations == []
        seen = page.evaluate("window.__progress")
        assert seen == sorted(seen), seen
        assert any(0 < value < 100 for value in seen), f"no intermediate progress was shown: {seen}"
        assert page.locator('[data-field="status"]').get_attribute("class") == "status status-succeeded"
        assert page.locator(".progress .pct").inner_text() == "100%"
        assert page.locator("#cancel-form").is_hidden()

        # The log as a person reads it: every line once, each with the time it arrived, a bar's redraws
        # collapsed into one line at its last state (one line per stage's bar here).
        log = page.locator("#log .line .text").all_inner_texts()
        times = page.locator("#log .line time").all_inner_texts()
        assert log[0].startswith("Optimizing ")
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d", when) for when in times), times
        bars = [parse_bar(line) for line in log if line.startswith("Training progress")]
        assert sorted((bar.total, bar.n) for bar in bars) == [(30, 30), (60, 60)]
        redraws = page.locator("#log .line[data-redraws]").evaluate_all(
            "rows => rows.map(r => Number(r.dataset.redraws))"
        )
        assert sorted(redraws) == [4, 7]  # 0, 10, 20, 30 and 0, 10, …, 60
        assert len([line for line in log if line.startswith("Training complete.")]) == 1
        shown_count = page.locator("#log-count").inner_text()
        raw_count = int(re.match(r"\((\d+) lines", shown_count)[1])
        assert raw_count == len(log) + sum(redraws) - len(redraws), shown_count
        assert page.locator('[data-field="stage"]').inner_text() == "Finished"  # the stage in words
        took = page.locator('[data-field="elapsed"]').inner_text()
        assert re.fullmatch(r"(\d+ min )?\d+ s", took), took
        metrics = page.locator('[data-field="metrics"]').inner_text()
        assert "loss=" in metrics and "psnr=" in metrics
        page.screenshot(path=str(tmp_path / "job-succeeded.png"), full_page=True)
        outside, errors = page.outside_requests, page.errors

    assert (tmp_path / "job-succeeded.png").stat().st_size > 0
    assert outside == []
    assert errors == []
    assert worker.poll() is None, worker.log_path.read_text()[-2000:]
    # The browser showed what the database says.
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.progress, job.owner.username) == (Job.Status.SUCCEEDED, 1.0, "alice")
    assert (job.params["seconds"], job.params["iterations"], job.params["coarse_iterations"]) == (4, 60, 30)
    assert job.log_line_count == raw_count


def test_starting_a_demo_job_lands_on_its_page_even_when_its_first_event_is_quicker(
    chromium_page, make_node, alice
):
    # No worker: the job stays queued; only the submit and its redirect matter here.
    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")

        def slow_redirect(route):
            # The server has created the job (and announced it on the dashboard's socket) before the browser
            # gets the redirect: hold the response a moment, as a slow network would.
            response = route.fetch(max_redirects=0)
            time.sleep(1.5)
            # If the page navigated elsewhere meanwhile, fulfilling fails; the assertion below says so.
            with contextlib.suppress(Exception):
                route.fulfill(response=response)

        page.route("**/jobs/new/", slow_redirect)
        page.fill("#id_seconds", "1")
        page.click("#start-demo")
        page.wait_for_timeout(3000)
        page.wait_for_load_state()
        landed = page.url
    assert JOB_PAGE.search(landed), f"landed on {landed}, not on the job's page"


def test_log_in_failure_and_api_docs_render_offline(chromium_page, alice):
    with chromium_page() as page:
        page.goto("/accounts/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "wrong")
        page.click("form.card button[type=submit]")
        assert "Please enter a correct username and password" in page.locator("form.card").inner_text()

        log_in(page, "alice", "alice-password-1")
        page.goto("/api/docs/")
        # Swagger UI comes from static files and renders the schema it fetched from this server.
        page.wait_for_selector(".swagger-ui .info .title")
        assert "Talkforge API" in page.locator(".swagger-ui .info .title").inner_text()
        page.wait_for_selector("text=/api/jobs/")
        outside, errors = page.outside_requests, page.errors
    assert outside == []
    assert errors == []


@pytest.fixture
def short_videos_allowed(monkeypatch):
    """The server (a subprocess) reads these at start: short test videos, few sampled frames."""
    monkeypatch.setenv("AVATAR_MIN_SECONDS", "2")
    monkeypatch.setenv("QUALITY_SAMPLE_FRAMES", "6")


def test_an_avatar_upload_shows_its_progress_and_lands_on_the_checked_avatar(
    short_videos_allowed, chromium_page, alice, videos
):
    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto("/avatars/new/")
        page.fill("#id_name", "Anna")
        page.select_option("#id_engine", "demo")
        page.set_input_files("#id_video", str(videos["good"]))
        page.check("#id_consent")
        page.evaluate(
            """() => {
                sessionStorage.setItem('maxUpload', '0');
                const bar = document.getElementById('upload-progress');
                const keep = () => {
                    sessionStorage.setItem('maxUpload', bar.getAttribute('aria-valuenow'));
                    if (bar.classList.contains('indeterminate')) sessionStorage.setItem('sawChecking', '1');
                };
                new MutationObserver(keep).observe(bar, {attributes: true});
            }"""
        )
        page.click("#avatar-form button[type=submit]")
        page.wait_for_url(re.compile(r"/avatars/\d+/$"), timeout=60_000)
        assert page.evaluate("sessionStorage.getItem('maxUpload')") == "100"
        # Once sent, the check (no percentage) showed a moving bar rather than a bar standing at 100 %.
        assert page.evaluate("sessionStorage.getItem('sawChecking')") == "1"
        assert "Anna" in page.locator("h1").inner_text()
        assert "passed" in page.locator("#quality h2").inner_text()
        assert page.locator("video").count() == 1

        page.goto("/avatars/new/")
        page.fill("#id_name", "Silent")
        page.set_input_files("#id_video", str(videos["no_audio"]))
        page.check("#id_consent")
        page.click("#avatar-form button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('upload-errors').textContent.includes('no audio')"
        )
        assert page.url.endswith("/avatars/new/")
        assert page.outside_requests == [] and page.errors == []


def in_thread(work) -> None:
    """Database work while Playwright's loop runs in this thread (Django refuses it from an async context)."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_avatar_page_follows_preprocessing_live_and_charts_the_quality_figures(
    chromium_page, alice, redis_db
):
    from avatars.models import Avatar, Checkpoint, Evaluation
    from gpu_nodes.models import Node
    from jobs import events

    node = Node.objects.create(name="n1", workdir="/w", status="online")
    avatar = Avatar.objects.create(
        owner=alice, name="Anna", slug="anna-live", engine="demo", status="training", video="avatars/x/x.mp4",
        video_info={"duration": 60.0, "width": 512, "height": 512, "frames": 1500},
        consent_given_at="2026-01-01T00:00Z", consent_given_by=alice, consent_statement="yes",
    )  # fmt: skip
    for iteration, psnr, ssim in ((500, 27.5, 0.81), (1000, 29.25, 0.86)):
        checkpoint = Checkpoint.objects.create(
            avatar=avatar, node=node, stage="fine", iteration=iteration, path="/p"
        )
        Evaluation.objects.create(
            avatar=avatar, checkpoint=checkpoint, iteration=iteration, psnr=psnr, ssim=ssim, frames=3,
            rendered_frames=3, reference_frames=3,
            per_frame={"psnr": [psnr - 1, psnr, psnr + 1], "ssim": [ssim] * 3},
        )  # fmt: skip
    job = Job.objects.create(
        owner=alice, kind="preprocess", avatar=avatar, node=node, status="running", stage="images",
        params={"avatar": avatar.pk},
    )  # fmt: skip
    message = events.job_status_message(job)

    def state(page, stage: str) -> str:
        return page.locator(f'#stages tr[data-stage="{stage}"] [data-field="state"]').inner_text()

    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/avatars/{avatar.pk}/")
        assert (state(page, "audio"), state(page, "images"), state(page, "semantics")) == (
            "done",
            "running",
            "pending",
        )
        # The best checkpoint is marked; both charts draw PSNR and SSIM.
        assert "best" in page.locator('#evaluations tr[data-iteration="1000"]').inner_text()
        for chart in ("#quality-chart", "#frame-chart"):
            drawn = page.locator(f"{chart} polyline").evaluate_all(
                "lines => lines.map(l => l.dataset.series)"
            )
            assert drawn == ["psnr", "ssim"], chart
            # Each on its own axis, in its own unit; the horizontal axis says what it counts.
            labels = page.locator(f"{chart} .axis-label").evaluate_all(
                "texts => Object.fromEntries(texts.map(t => [t.dataset.axis, t.textContent]))"
            )
            assert (labels["left"], labels["right"]) == ("PSNR (dB)", "SSIM (0–1)"), labels
            ssim_ticks = [
                float(t) for t in page.locator(f'{chart} .tick[data-axis="right"]').all_text_contents()
            ]
            assert 0.7 <= min(ssim_ticks) <= 0.81 and 0.86 <= max(ssim_ticks) <= 1.0, ssim_ticks
        x_ticks = page.locator('#quality-chart .tick[data-axis="x"]').all_text_contents()
        assert x_ticks[0] == "500" and x_ticks[-1] == "1000", x_ticks  # the checkpoints' iterations
        assert (
            "training iteration" in page.locator('#quality-chart .axis-label[data-axis="x"]').text_content()
        )
        page.wait_for_timeout(500)  # the page's socket is connected and has its snapshot
        # The job moves on (in the database, then its owner's stream says so): the server draws the table
        # again; the page holds no rule of its own.
        in_thread(lambda: Job.objects.filter(pk=job.pk).update(stage="landmarks"))
        events.publisher.publish(events.user_group(alice.pk), {**message, "stage": "landmarks"})
        page.wait_for_function(
            """() => document.querySelector('#stages tr[data-stage="landmarks"] [data-field="state"]')
                      .textContent === "running" """
        )
        assert state(page, "torso_gt") == "done" and state(page, "face_tracking") == "pending"
        in_thread(lambda: Job.objects.filter(pk=job.pk).update(status="failed"))
        events.publisher.publish(
            events.user_group(alice.pk), {**message, "stage": "landmarks", "status": "failed"}
        )
        page.wait_for_function(
            """() => document.querySelector('#stages tr[data-stage="landmarks"] [data-field="state"]')
                      .textContent === "failed" """
        )
        assert not page.errors and not page.outside_requests


def test_avatar_page_reaches_its_final_state_when_the_pipeline_ends_without_a_reload(
    chromium_page, alice, redis_db
):
    """The page open while the last step runs: when it ends, the figures, the buttons and the status
    come in by themselves (issue: the page kept Cancel and "Not evaluated yet" until a reload)."""
    from django.db import connection
    from django.utils import timezone

    from avatars.models import Avatar, Checkpoint, Evaluation
    from gpu_nodes.models import Node
    from jobs import events

    node = Node.objects.create(name="n1", workdir="/w", status="online")
    avatar = Avatar.objects.create(
        owner=alice, name="Anna", slug="anna-end", engine="demo", status="training", video="avatars/x/x.mp4",
        video_info={"duration": 60.0, "width": 512, "height": 512, "frames": 1500},
        consent_given_at="2026-01-01T00:00Z", consent_given_by=alice, consent_statement="yes",
    )  # fmt: skip
    job = Job.objects.create(
        owner=alice, kind="evaluate", avatar=avatar, node=node, status="running", stage="scoring",
        params={"avatar": avatar.pk},
    )  # fmt: skip

    def pipeline_ends():  # in a thread of its own: Playwright keeps an event loop in this one
        try:
            checkpoint = Checkpoint.objects.create(
                avatar=avatar, node=node, stage="fine", iteration=500, path="/p"
            )
            Evaluation.objects.create(
                avatar=avatar, checkpoint=checkpoint, iteration=500, psnr=31.25, ssim=0.9, frames=3,
                rendered_frames=3, reference_frames=3,
                per_frame={"psnr": [31, 31.25, 31.5], "ssim": [0.9] * 3},
            )  # fmt: skip
            Avatar.objects.filter(pk=avatar.pk).update(status="trained")
            Job.objects.filter(pk=job.pk).update(status="succeeded", finished_at=timezone.now(), progress=1)
            ended = Job.objects.get(pk=job.pk)
            events.publisher.publish(events.user_group(alice.pk), events.job_status_message(ended))
        finally:
            connection.close()

    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto(f"/avatars/{avatar.pk}/")
        assert page.locator("#cancel-training").is_visible()
        assert "Not evaluated yet" in page.locator("#quality-figures").inner_text()
        page.evaluate("window.__marker = 1")
        page.wait_for_timeout(500)  # the page's socket is connected
        thread = threading.Thread(target=pipeline_ends)
        thread.start()
        thread.join()
        page.wait_for_selector('#evaluations tr[data-iteration="500"]')
        assert "31.25" in page.locator("#evaluations").inner_text()
        assert page.locator("#cancel-training").count() == 0
        assert page.locator("#generate").is_visible()
        assert page.locator("#facts .status").inner_text() == "Trained"
        assert page.locator('#training-jobs [data-field="status"]').first.inner_text() == "succeeded"
        assert page.evaluate("window.__marker") == 1, "the page was reloaded"
        assert not page.errors and not page.outside_requests


def test_a_notice_appears_on_whatever_page_the_person_has_open(chromium_page, alice, redis_db):
    from jobs import events

    with chromium_page() as page:
        log_in(page, "alice", "alice-password-1")
        page.goto("/videos/")
        page.wait_for_timeout(700)  # the notices' socket is connected
        text = "Ada's video (3.0 s) is ready."
        notice = {
            "type": "job.notice",
            "subject": "Video #7 is ready",
            "text": text,
            "url": "/videos/7/",
            "ok": True,
        }
        events.publisher.publish(events.user_group(alice.pk), notice)
        page.wait_for_selector("#notices .notice a[href='/videos/7/']")
        assert "Ada's video (3.0 s) is ready." in page.locator("#notices").inner_text()
        page.click("#notices .notice button")
        assert page.locator("#notices .notice").count() == 0
        assert not page.errors
