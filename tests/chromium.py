"""Debian's headless Chromium, driven by Selenium, for the tests that look at screens: one way to find
it, to say why it is missing, and to start it. No browser is ever downloaded: CI installs the chromium
and chromium-driver packages (apt); without them the tests that need one are skipped, saying why."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1440, 1000


def missing_browser() -> str:
    """Why no browser test can run here, or "" when one can."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return (
            f"no headless browser: needs Chromium ({CHROMIUM}) and its driver ({CHROMEDRIVER}); "
            "install the chromium and chromium-driver packages (apt)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements/dev.txt)"
    return ""


@contextmanager
def chromium(
    *, width: int = WIDTH, height: int = HEIGHT, exact_viewport: bool = False, logs: bool = False
) -> Iterator[Any]:
    """A headless Chromium whose window is width x height (`exact_viewport`: the page itself gets that
    size, whatever the window's frame takes); `logs` keeps the console and the network log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        if exact_viewport:
            inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
            outer = driver.get_window_size()
            driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])
        yield driver
    finally:
        driver.quit()
