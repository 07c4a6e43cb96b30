"""The every-screen walk's parts: the seeded data, and a logged-in Chromium that opens a screen once,
checks it and saves its screenshot (tests/browser/conftest.py holds the fixtures).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command

from tests.chromium import HEIGHT, WIDTH

SCREENSHOTS = Path(os.environ.get("COSTCONTROL_SCREENSHOTS") or settings.BASE_DIR / "var" / "screenshots")
# A full-page screenshot stops here (a change list of 100 rows is ~4,000 px).
MAX_SHOT_HEIGHT = 8000
USERNAME, PASSWORD = "walker", "walk-every-screen"


# --- data ------------------------------------------------------------------------------------------


def seed_every_screen() -> None:
    """A few days of demo usage plus at least one object of every model the admin shows, each made
    through the services real use goes through (evaluation opens the alerts and writes their
    notifications, the outbox delivers them, a reservation is reserved, a key issued)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone
    from django_celery_beat.models import ClockedSchedule, SolarSchedule

    from alerts.delivery import notifications_flush
    from alerts.evaluation import alerts_evaluate
    from alerts.models import Channel
    from alerts.services import alert_rules_defaults_ensure
    from api.keys import api_key_issue
    from budgets.models import Budget
    from budgets.services import budget_reserve
    from core.models import Team
    from costcontrol.services import periodic_tasks_install
    from tracking.billing import billing_key_set, bills_import_csv
    from tracking.gpu import gpu_settings_ensure
    from tracking.models import BillingSource

    call_command("seed_demo_data", "--days", "3", "--json", stdout=io.StringIO())
    user_model = get_user_model()
    user_model.objects.create_superuser(USERNAME, "walker@example.com", PASSWORD)
    analyst = user_model.objects.create_user("ana", "ana@example.com", PASSWORD, is_staff=True)
    team = Team.objects.create(name="growth")
    team.members.add(analyst)
    Group.objects.create(name="finance")
    periodic_tasks_install()
    ClockedSchedule.objects.create(clocked_time=timezone.now() + timedelta(days=1))
    SolarSchedule.objects.create(event="sunrise", latitude=Decimal("52.52"), longitude=Decimal("13.40"))
    gpu_settings_ensure()
    # A default channel: evaluation writes every alert a notification, and the outbox delivers it.
    email = Channel.objects.create(name="Finance email", kind="email", target="finance@example.com", is_default=True)
    Budget.objects.create(
        name="Research hard cap", scope="service:research", amount=Decimal("50"), period="monthly", hard_limit=True
    ).channels.add(email)
    Budget.objects.create(name="Growth team monthly", scope="team:growth", team=team, amount=Decimal("20"))
    # A template: a budget for each end user (the alert pass below gives each one that spent its own).
    Budget.objects.create(name="Daily per end user", scope="subject:*", amount=Decimal("0.50"), period="daily")
    budget_reserve(scopes=["service:research"], amount=Decimal("0.25"), service="research")
    api_key_issue(name="Lead pipeline", service="lead-gen")
    alert_rules_defaults_ensure()
    alerts_evaluate()
    notifications_flush()
    # Provider bills: an API source with a stored key (never pulled here: no network), invoice lines by CSV.
    openai = BillingSource.objects.create(name="OpenAI organization", kind="openai", provider="openai")
    billing_key_set(openai, "sk-admin-walk-not-a-key")
    invoices = BillingSource.objects.create(name="Mistral invoices", kind="csv", provider="mistral")
    yesterday = timezone.now().date() - timedelta(days=1)
    lines = f"day,model,amount,currency,account,description\n{yesterday},mistral-large-latest,12.40,EUR,prod,tokens\n"
    bills_import_csv(invoices, io.StringIO(lines))


# Fields shown exactly as they are stored, whatever they look like: keys that a client or the system
# wrote (an idempotency key may hold an ISO timestamp, 'gpu:...:2026-12-04T14:59:00+00:00:idle').
VERBATIM = ".field-idempotency_key, .field-dedup_key, .field-key"

# What the page tells the walk about itself, in one round trip (arguments[0]: VERBATIM).
INSPECT_JS = """
const describe = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
const out = {
    path: location.pathname,
    title: document.title,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0),
    text: (document.querySelector('#content') || document.body).innerText,
    cells: Array.from(document.querySelectorAll('#result_list tbody td, #result_list tbody th')).map(
        (c) => [Array.from(c.classList).filter((k) => k.startsWith('field-')).join(' ').slice(6), c.innerText]),
    // A change list's column names by field, as the person reads them (without the sort-order digits).
    headers: Object.fromEntries(Array.from(document.querySelectorAll('#result_list thead th')).map((th) => [
        Array.from(th.classList).filter((k) => k.startsWith('column-')).join(' ').slice(7),
        (th.querySelector('.text') || th).innerText.replace(/\\s+/g, ' ').trim().toLowerCase()])),
    links: Array.from(document.querySelectorAll('a[href]')).map((a) => a.href),
    verbatim: Array.from(document.querySelectorAll(arguments[0])).map((e) => e.innerText),
    scrollers: [],
};
// Anything that scrolls sideways inside the page (Django's change list table scrolls in its own box);
// form controls (a multiple select of long permission names) scroll in their own way and are left out.
for (const el of document.querySelectorAll('body *')) {
    if (['SELECT', 'TEXTAREA', 'INPUT'].includes(el.tagName)) { continue; }
    if (el.clientWidth === 0 || el.scrollWidth <= el.clientWidth + 1) { continue; }
    const overflow = getComputedStyle(el).overflowX;
    if (overflow !== 'auto' && overflow !== 'scroll') { continue; }
    const right = el.getBoundingClientRect().right;
    const hidden = Array.from(el.querySelectorAll('thead th'))
        .filter((th) => th.getBoundingClientRect().right > right + 1)
        .map((th) => (th.querySelector('.text') || th).innerText.replace(/\\s+/g, ' ').trim() || '(unnamed)');
    out.scrollers.push({what: describe(el), scrollWidth: el.scrollWidth, clientWidth: el.clientWidth, hidden: hidden});
}
return out;
"""

# Every canvas: shown or not, its size, how many of its pixels are painted (every 7th sampled), and,
# where Chart.js draws it, how many data points its datasets hold.
CANVASES_JS = """
const describe = (el) => el.id ? '#' + el.id : (el.getAttribute('aria-label') || 'canvas');
return Array.from(document.querySelectorAll('canvas')).map((c) => {
    const shown = c.getClientRects().length > 0;
    let painted = 0;
    if (shown && c.width > 0 && c.height > 0) {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < data.length; i += 28) { if (data[i] > 0) { painted++; } }
    }
    let points = null;
    const chart = window.Chart && window.Chart.getChart ? window.Chart.getChart(c) : null;
    if (chart) {
        points = chart.data.datasets.reduce((n, d) => n + d.data.filter(
            (v) => v !== null && v !== undefined && !(typeof v === 'object' && v.y === null)).length, 0);
    }
    return {name: describe(c), shown: shown, width: c.width, height: c.height, painted: painted, points: points};
});
"""


@dataclass
class Screen:
    """One page of the walk as the browser saw it."""

    name: str
    url: str
    final_path: str = ""
    title: str = ""
    problems: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    text: str = ""
    cells: list[tuple[str, str]] = field(default_factory=list)  # (field name, text) of change list cells
    headers: dict[str, str] = field(default_factory=dict)  # field name -> column title
    verbatim: list[str] = field(default_factory=list)  # texts of VERBATIM fields
    canvases: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None


@dataclass
class Walk:
    """The logged-in browser and every screen it has seen (each URL is opened once)."""

    driver: Any
    base_url: str
    screens: dict[str, Screen] = field(default_factory=dict)
    # Every URL any page asked for, over the whole run (the login included).
    requests: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return urlsplit(self.base_url).netloc

    def open(self, name: str, path: str, *, ready_css: str = "") -> Screen:
        if path in self.screens:
            return self.screens[path]
        screen = Screen(name=name, url=self.base_url + path)
        self.driver.get(screen.url)
        if ready_css:
            self._wait_for(ready_css, screen)
        self.inspect(screen)
        self.screens[path] = screen
        return screen

    def _wait_for(self, css: str, screen: Screen) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:
            screen.problems.append(f"never showed {css!r} (30 s)")

    def inspect(self, screen: Screen, *, screenshot: bool = True) -> None:
        page = self.driver.execute_script(INSPECT_JS, VERBATIM)
        screen.final_path, screen.title, screen.text = page["path"], page["title"], page["text"]
        screen.links = page["links"]
        screen.cells = [tuple(cell) for cell in page["cells"]]
        screen.headers = page["headers"]
        screen.verbatim = [text for text in page["verbatim"] if text.strip()]
        if screen.final_path == "/admin/login/" != urlsplit(screen.url).path:
            screen.problems.append("sent back to the login page")
        if page["scrollWidth"] > page["innerWidth"] + 1:
            screen.problems.append(
                f"the page scrolls sideways: {page['scrollWidth']} px wide in a {page['innerWidth']} px window"
            )
        for box in page["scrollers"]:
            hidden = f"; columns out of sight: {', '.join(box['hidden'])}" if box["hidden"] else ""
            screen.problems.append(
                f"{box['what']} scrolls sideways ({box['scrollWidth']} px in {box['clientWidth']} px){hidden}"
            )
        screen.canvases = self._painted_canvases()
        for canvas in screen.canvases:
            if not canvas["shown"]:
                continue  # in a closed <details> or a hidden tab: nothing to see yet
            if not canvas["width"] or not canvas["height"]:
                screen.problems.append(f"chart {canvas['name']} has no size ({canvas['width']}x{canvas['height']})")
            elif canvas["painted"] == 0:
                screen.problems.append(f"chart {canvas['name']} is blank (nothing painted)")
            if canvas["points"] == 0:
                screen.problems.append(f"chart {canvas['name']} has no data (an empty chart)")
        self._read_logs(screen)
        if screenshot:
            screen.screenshot = self._screenshot(screen.name, page["height"])

    def _painted_canvases(self) -> list[dict[str, Any]]:
        """Wait (up to 5 s) until every shown canvas has paint, then let Chart.js finish its animation."""
        deadline = time.monotonic() + 5
        canvases = self.driver.execute_script(CANVASES_JS)
        if not canvases:
            return canvases
        while time.monotonic() < deadline and any(c["shown"] and c["width"] and not c["painted"] for c in canvases):
            time.sleep(0.2)
            canvases = self.driver.execute_script(CANVASES_JS)
        time.sleep(1.0)  # Chart.js animates for 1 s by default: the screenshot shows the end of it
        return self.driver.execute_script(CANVASES_JS)

    def _read_logs(self, screen: Screen) -> None:
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            # The app has no favicon; the browser asks for one on its own, no page does.
            if entry.get("level") == "SEVERE" and "/favicon.ico" not in message:
                screen.problems.append(f"browser console error: {message}")
        for entry in self.driver.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            params = event.get("params", {})
            if event.get("method") == "Network.requestWillBeSent":
                url = params["request"]["url"]
                screen.requests.append(url)
                self.requests.append(url)
                if self.foreign(url):
                    screen.problems.append(f"request to another host: {url}")
            elif event.get("method") == "Network.responseReceived":
                response = params["response"]
                if response["status"] >= 400 and not response["url"].endswith("/favicon.ico"):
                    screen.problems.append(f"{response['url']} answered {response['status']}")

    def foreign(self, url: str) -> bool:
        """A request that leaves this server (data:, blob: and the like never leave the browser)."""
        parts = urlsplit(url)
        return parts.scheme in {"http", "https", "ws", "wss"} and parts.netloc != self.origin

    def _screenshot(self, name: str, height: int) -> Path:
        """The whole page (up to MAX_SHOT_HEIGHT px), laid out at 1440 x 1000."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": WIDTH,
                    "height": min(max(height, HEIGHT), MAX_SHOT_HEIGHT),
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
