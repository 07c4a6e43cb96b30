"""Taking Traceloop's OpenLLMetry instrumentations off the openai and anthropic SDKs again (shared by
tests/client and tests/api/test_otlp_traceloop.py)."""

from __future__ import annotations

import sys

import wrapt


def sdk_patches() -> list[tuple[type, str]]:
    """The methods of the openai and anthropic SDKs' classes that a wrapt wrapper replaces."""
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or name.partition(".")[0] not in ("openai", "anthropic"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                found += [
                    (value, attr) for attr, method in vars(value).items() if isinstance(method, wrapt.FunctionWrapper)
                ]
    return found


def sdk_restore() -> None:
    """opentelemetry-instrumentation-openai 0.62.4's uninstrument() takes none of its 24 wrappers off
    (it calls unwrap("openai.resources.chat.completions", "Completions.create"), and unwrap looks in that
    module for an attribute literally named "Completions.create"), so the SDK's own methods are put
    back here. The Anthropic instrumentor's uninstrument() does take its wrappers off."""
    for owner, attr in sdk_patches():
        method = vars(owner)[attr]
        while isinstance(method, wrapt.FunctionWrapper):
            method = method.__wrapped__
        setattr(owner, attr, method)
