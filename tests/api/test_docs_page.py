"""The API docs page loads Swagger UI from this server, never from a CDN."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders


def test_the_docs_page_loads_its_assets_from_this_server(client):
    page = client.get("/api/v1/docs").content.decode()

    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets, page
    assert not [a for a in assets if "//" in a], assets  # no other host (cdn.jsdelivr.net before)
    for path in ("ninja/swagger-ui-bundle.js", "ninja/swagger-ui.css", "ninja/swagger-ui-init.js"):
        assert any(a.endswith(path) for a in assets), (path, assets)
        assert finders.find(path), path  # served by staticfiles
