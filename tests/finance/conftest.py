from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.finance.focus import FocusResult, focus_validate, missing_validator


@pytest.fixture(scope="session")
def focus_validator() -> Callable[..., FocusResult]:
    """focus_validate (tests/finance/focus.py); skips, saying why, only where .venv-focus is not built."""
    if reason := missing_validator():
        pytest.skip(reason)
    return focus_validate
