"""The shared price file (LiteLLM 1.108.11's model_prices_and_context_window.json), wherever this checkout is.

The workspace keeps it at ../shared/data/model_prices.json; a clone elsewhere (CI) reads the same file
from the LiteLLM release that make test installs as the reference (requirements/litellm-ref.txt), so the
tests that read it never skip.
"""

from importlib.util import find_spec
from pathlib import Path

from django.conf import settings


def _price_file() -> Path:
    shared = Path(settings.BASE_DIR).parent / "shared" / "data" / "model_prices.json"
    if shared.exists():
        return shared
    spec = find_spec("litellm")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"No price file: neither {shared} nor LiteLLM's bundled copy (make test installs requirements/litellm-ref.txt)"
        )
    return Path(spec.origin).parent / "model_prices_and_context_window_backup.json"


PRICE_FILE = _price_file()
