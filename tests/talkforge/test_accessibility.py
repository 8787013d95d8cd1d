"""axe-core in Chromium on every main page of the portal, at a phone's width (390 px) and a laptop's
(1280 px), as alice with one of each of her things: no serious or critical violation. axe-core is the
copy bundled by the axe-playwright-python package (pyproject's dev extra), injected from disk: no CDN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.talkforge import test_browser
from tests.talkforge.test_browser import CHROMIUM, log_in
from tests.talkforge.test_responsive import LAPTOP, PHONE, pages_of

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM}"
)

portal_page = test_browser.chromium_page


def axe_source() -> Path:
    axe = pytest.importorskip("axe_playwright_python", reason="pip install -e '.[dev]' (axe-core for tests)")
    return Path(axe.__file__).parent / "axe.min.js"


AXE_RUN = """async (rules) => {
    const result = await axe.run(document, {resultTypes: ["violations"], rules});
    return result.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " :: " + n.failureSummary.split("\\n")[1]),
    }));
}"""


# The API docs page is Swagger UI's markup (drf-spectacular): each operation's summary is a button holding
# another control. That structure is the library's, not ours; everything else axe checks there too.
THIRD_PARTY = {"api-docs": {"nested-interactive": {"enabled": False}}}


def serious_violations(page, name: str = "") -> list[dict]:
    page.add_script_tag(path=str(axe_source()))
    return page.evaluate(AXE_RUN, THIRD_PARTY.get(name, {}))


def test_axe_core_finds_no_serious_or_critical_violation_on_any_page(portal_page, alices_things):
    pages = [("landing", "/"), ("login", "/accounts/login/"), *pages_of(alices_things)]
    found: dict[str, list[dict]] = {}
    with portal_page() as page:
        for viewport in (PHONE, LAPTOP):
            page.set_viewport_size(viewport)
            page.context.clear_cookies()
            for name, url in pages:
                if name == "dashboard":
                    log_in(page, "alice", "alice-password-1")
                page.goto(url)
                if name == "api-docs":
                    page.wait_for_selector(".swagger-ui .info .title")
                page.wait_for_load_state("networkidle")
                if violations := serious_violations(page, name):
                    found[f"{name} @ {viewport['width']}"] = violations
        outside = page.outside_requests
    report = "\n".join(
        f"{where}: {v['impact']} {v['id']} ({v['help']}): {v['nodes']}"
        for where, vs in found.items()
        for v in vs
    )
    assert not found, "axe-core found:\n" + report
    assert outside == []
