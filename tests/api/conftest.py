from __future__ import annotations

import pytest

from api.keys import api_key_issue


@pytest.fixture
def api_key(db):
    return api_key_issue(name="image-api prod", service="image-api")


@pytest.fixture
def api(client, api_key):
    """The Django test client with the key's Authorization header."""

    class Api:
        key = api_key

        def post(self, path: str, body: object, **kwargs: object):
            import json

            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
            return client.post(
                f"/api/v1{path}",
                data=data,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {api_key.plaintext}",
                **kwargs,
            )

        def get(self, path: str, params: dict | None = None):
            return client.get(f"/api/v1{path}", params or {}, HTTP_AUTHORIZATION=f"Bearer {api_key.plaintext}")

    return Api()
