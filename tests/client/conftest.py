from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The client is a package of its own (costcontrol_client/pyproject.toml), not installed into
# the server's venv: import it from its source tree, ahead of the outer folder of that name.
CLIENT_PROJECT = Path(__file__).resolve().parents[2] / "costcontrol_client"
if str(CLIENT_PROJECT) not in sys.path:
    sys.path.insert(0, str(CLIENT_PROJECT))

from costcontrol_client import Client  # noqa: E402

from .fake_costcontrol import API_KEY, FakeCostcontrol  # noqa: E402


@pytest.fixture
def fake_api() -> Iterator[FakeCostcontrol]:
    fake = FakeCostcontrol().start()
    yield fake
    fake.stop()


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """Clients with short waits (tests stay well under 10 s), a spool in tmp_path, closed after the test."""
    made: list[Client] = []

    def make(url: str, **options: Any) -> Client:
        settings: dict[str, Any] = {
            "spool_path": tmp_path / "spool.jsonl",
            "flush_interval": 0.05,
            "timeout": 2.0,
            "max_retries": 3,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "close_timeout": 2.0,
        }
        settings.update(options)
        client = Client(url, options.pop("api_key", API_KEY), **{k: v for k, v in settings.items() if k != "api_key"})
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=2.0)


@pytest.fixture(autouse=True)
def no_sender_thread_outlives_its_test() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.name == "costcontrol-sender" and t.is_alive()]
        if not left:
            return
        time.sleep(0.01)
    raise AssertionError(f"sender threads left running: {left}")


@pytest.fixture
def traceloop_openai() -> Iterator[Any]:
    """Traceloop's OpenAIInstrumentor on the openai SDK for one test (its spans kept in memory: the
    exporter is handed out); the SDK's own methods are put back afterwards, for the other tests."""
    pytest.importorskip("opentelemetry.instrumentation.openai")
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from .traceloop import sdk_patches, sdk_restore

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    assert sdk_patches() == []
    try:
        instrumentor.instrument(tracer_provider=provider)
        assert sdk_patches()
        yield exporter
    finally:
        instrumentor.uninstrument()
        sdk_restore()
        provider.shutdown()
    assert sdk_patches() == []
