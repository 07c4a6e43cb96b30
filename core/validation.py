"""Small input checks shared by the services: each raises ValidationError naming the field."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def clean_text(value: Any, *, field: str, max_length: int, required: bool = False) -> str:
    """A stripped string of at most max_length characters; None is the empty string."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError({field: f"must be a string, not {type(value).__name__}"})
    if has_surrogate(value):
        raise ValidationError({field: "must not contain a lone surrogate (\\ud800-\\udfff): it is not a character"})
    value = value.strip()
    if required and not value:
        raise ValidationError({field: "is required"})
    if len(value) > max_length:
        raise ValidationError({field: f"is longer than {max_length} characters"})
    return value


def has_surrogate(value: str) -> bool:
    """A lone UTF-16 surrogate (JSON's "\\ud800"): Python holds it, no database can encode it."""
    return any("\ud800" <= c <= "\udfff" for c in value)
