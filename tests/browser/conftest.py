"""Fixtures of the every-screen browser walk: a seeded site, a live server and one logged-in Chromium
for the whole module (Debian's chromium + chromium-driver through Selenium, started as
tests/analytics/test_browser.py starts it, with the browser console and the network log kept).

pytest-django's own live_server fixture makes every test that uses it transactional (the database is
emptied after each test), so the walk, whose tests share one seeded database and one browser, runs its
own server (pytest-django's LiveServer, on the same test database), seeds once, commits, and empties
the database itself once the module is done, as a transactional test does. Its tests use the `db`
fixture all the same: that is what makes pytest-django create the test database at all, and it rolls
back whatever a test writes itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.backends.base.creation import TEST_DATABASE_PREFIX

from tests.chromium import chromium as browser

from .walk import PASSWORD, USERNAME, Walk, seed_every_screen


@pytest.fixture(scope="module")
def site(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """The seeded site's base URL; the database is open to the module's tests and emptied after."""
    from pytest_django.live_server_helper import LiveServer

    with django_db_blocker.unblock():
        name = str(connection.settings_dict["NAME"])
        # SQLite's in-memory test database keeps its test name; PostgreSQL's is test_<NAME>.
        if name != connection.creation._get_test_db_name() and not name.startswith(TEST_DATABASE_PREFIX):
            pytest.fail(
                f"refusing to seed {connection.settings_dict['NAME']}: not a test database (use the db fixture)"
            )
        try:
            seed_every_screen()
            server = LiveServer("localhost")
            server._live_server_modified_settings.enable()
            try:
                yield server.url
            finally:
                server._live_server_modified_settings.disable()
                server.stop()
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # The console (JS errors) and the network log (every request the page makes, and its answer) kept.
    with browser(exact_viewport=True, logs=True) as driver:
        yield driver


@pytest.fixture(scope="module")
def walk(site: str, chromium: Any) -> Walk:
    """Logged in through the login form, as a person would."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    walk = Walk(driver=chromium, base_url=site)
    login = walk.open("login", "/admin/login/?next=/admin/")
    chromium.find_element(By.NAME, "username").send_keys(USERNAME)
    chromium.find_element(By.NAME, "password").send_keys(PASSWORD)
    chromium.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    try:
        WebDriverWait(chromium, 30).until(lambda driver: urlsplit(driver.current_url).path == "/admin/")
    except TimeoutException:
        pytest.fail(f"logging in as {USERNAME!r} failed: the form led to {chromium.current_url}")
    walk._read_logs(login)  # what the form's submission asked for counts for the login screen
    return walk
