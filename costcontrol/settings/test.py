"""pytest: the same settings as local, with fast password hashing and eager-free Celery."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import env_secret

DEBUG = False
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "test-only-not-secret")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
# The delivery tests' webhook and SMTP servers listen on 127.0.0.1 (tests of the guard override this).
CHANNEL_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
# A developer's .env may name a real Slack webhook: tests post nowhere unless a test says so.
SLACK_WEBHOOK_URL = ""
ENABLE_SLACK_ALERTS = False
