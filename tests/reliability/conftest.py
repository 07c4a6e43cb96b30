from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import RedisServer, redis_server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 for this test; `redis.stop()` / `redis.start()` take it down and back."""
    with redis_server(tmp_path) as server:
        yield server
