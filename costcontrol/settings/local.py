"""`make run`: SQLite and the filesystem broker under var/, DEBUG on, a dev-only secret key."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import env_bool, env_secret

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "local-development-only-not-secret")  # never used in production
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
