"""costcontrol client: record what AI API calls cost, without slowing them, and ask budgets first.

    from costcontrol_client import Client
    cc = Client("https://costcontrol.internal", api_key, service="search")
    cc.record(provider="openai", model="gpt-4o", operation="chat", input_tokens=812, output_tokens=95)

Only the standard library is required; the wrappers import `openai` / `anthropic` when called.
`costcontrol_client.litellm` (a LiteLLM callback) imports `litellm`: it is not imported from here.
"""

from __future__ import annotations

from ._version import __version__
from .client import EVENT_FIELDS, USAGE_FIELDS, Client, Receipt, default_dead_letter_path, default_spool_path
from .errors import (
    AuthError,
    BudgetExceeded,
    CostcontrolError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServiceMismatch,
    Unavailable,
)
from .wrappers import wrap_anthropic, wrap_openai

__all__ = [
    "EVENT_FIELDS",
    "USAGE_FIELDS",
    "AuthError",
    "BudgetExceeded",
    "Client",
    "CostcontrolError",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "Receipt",
    "ServerError",
    "ServiceMismatch",
    "Unavailable",
    "__version__",
    "default_dead_letter_path",
    "default_spool_path",
    "wrap_anthropic",
    "wrap_openai",
]
