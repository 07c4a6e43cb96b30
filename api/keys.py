"""Issuing and verifying API keys.

A key is `cc_<prefix>_<secret>`: the prefix finds the row (an index lookup), the secret is 32
random bytes checked against a salted SHA-256 with a constant-time comparison. A slow password
hash (PBKDF2) would add ~100 ms to every ingest request and buys nothing for a 256-bit random
secret, which cannot be guessed or brute-forced from its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from core.models import Team

from .models import ApiKey

KEY_PREFIX = "cc_"
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


def api_key_issue(
    *,
    name: str,
    service: str,
    team: Team | None = None,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
    can_manage_budgets: bool = False,
    key: ApiKey | None = None,
) -> IssuedKey:
    """Create (or fill in an unsaved admin-built) API key and return its plaintext once.

    The admin and `manage.py api_key create` both issue keys here; the plaintext is never stored."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    key = key or ApiKey(
        name=name,
        service=service,
        team=team,
        scopes=scopes or [],
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
        can_manage_budgets=can_manage_budgets,
    )
    key.prefix, key.salt, key.hashed = prefix, salt, _digest(salt, secret)
    key.full_clean()
    key.save()
    return IssuedKey(key=key, plaintext=f"{KEY_PREFIX}{prefix}_{secret}")


def api_key_verify(plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The usable key this plaintext belongs to, or None (unknown, wrong secret, revoked, expired)."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    if not sep or not prefix or not secret or len(plaintext) > 200:
        return None
    key = ApiKey.objects.select_related("team").filter(prefix=prefix).first()
    if key is None:
        _digest("x" * 32, secret)  # the same work either way
        return None
    if not hmac.compare_digest(key.hashed, _digest(key.salt, secret)):
        return None
    now = now or timezone.now()
    if not key.is_usable(now):
        return None
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, key: ApiKey, now: datetime | None = None) -> bool:
    return bool(ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now()))
