"""Settings shared by every environment. Values come from the environment, read once here.

Every variable is documented in the README's configuration table with its default.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# A .env file beside manage.py is read if present; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def env_bool(name: str, default: bool) -> bool:
    """Booleans are read strictly: an ambiguous value is an error, never a guess."""
    raw = env.str(name, default="")
    if raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise environ.ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_decimal(name: str, default: str) -> Decimal:
    raw = env.str(name, default=default)
    try:
        value = Decimal(raw)
    except Exception:  # noqa: BLE001 - any parse failure is a configuration error
        raise environ.ImproperlyConfigured(f"{name}={raw!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise environ.ImproperlyConfigured(f"{name}={raw!r} must be a finite, non-negative number")
    return value


def env_decimal_optional(name: str) -> Decimal | None:
    """An amount that may be left unset: empty or unset is None, anything else is read as env_decimal."""
    return env_decimal(name, "") if env.str(name, default="").strip() else None


def env_addresses(name: str) -> list[str]:
    """A comma-separated list with blanks dropped: "a@x, b@x," is ["a@x", "b@x"]."""
    return [item.strip() for item in env.list(name, default=[]) if item.strip()]


def env_secret(name: str, default: str | None = None) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/systemd credentials)."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text().strip()
    return env.str(name, default=default)


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = True
# One way to write a date in the whole admin, the ISO order with a 24-hour clock: 2026-12-04 14:05.
# Django takes a locale's formats before these; costcontrol/formats/ hands these to the locale.
FORMAT_MODULE_PATH = ["costcontrol.formats"]
DATE_FORMAT = SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
# Weeks start on Monday, as weekly budget periods do (the admin's calendar widget).
FIRST_DAY_OF_WEEK = 1
# Numbers the admin prints are grouped by thousands (558,378 tokens); form inputs are not localized,
# so what a form shows it parses back (1234.50).
USE_THOUSAND_SEPARATOR = True
NUMBER_GROUPING = 3

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_prometheus",
    "ninja",  # its templates and static files: /api/v1/docs loads Swagger UI from here, not a CDN
    "costcontrol",
    "core",
    "tracking",
    "budgets",
    "alerts",
    "monitoring",
    "analytics",
    "api",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: times the whole request
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "costcontrol.middleware.DatabaseUnavailableMiddleware",  # database down: 503 + Retry-After, not 500
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # last
]

ROOT_URLCONF = "costcontrol.urls"
WSGI_APPLICATION = "costcontrol.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# Embedded default: SQLite under var/. DATABASE_URL=postgres://... switches to PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'costcontrol.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # Wait up to SQLITE_BUSY_TIMEOUT seconds for the write lock instead of failing at once.
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
            # Take the write lock when a transaction starts: a deferred transaction that reads
            # first and writes later cannot be retried by SQLite and fails with "database is locked".
            "transaction_mode": "IMMEDIATE",
            # WAL lets readers (the admin, beat) run beside the writer.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# django-prometheus's wrappers of the same backends count queries, errors and their latency per alias.
DATABASES["default"]["ENGINE"] = {
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
}.get(DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Celery -----------------------------------------------------------------
# Embedded default: Celery's filesystem transport under var/celery (no broker to run).
# CELERY_BROKER_URL=redis://... switches to Redis.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = False
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=15 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=14 * 60)
# A task is acknowledged after it ran, so a worker killed mid-task leaves it for another worker;
# services are idempotent, so a re-run changes nothing twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Redis has no acknowledgements: a message a worker took and never acknowledged (its whole worker
# was SIGKILLed, OOM-killed or its node lost) goes back to the queue this many seconds after it was
# delivered, found by a sweep of every worker every few seconds. Short: a crashed task runs again
# soon. It must stay longer than any task may run (the hard time limit), or a task still running
# is handed to a second worker.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=60 * 60)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://")):
    if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
        raise environ.ImproperlyConfigured(
            f"CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT} s) must be longer than "
            f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT} s): a task still running when it runs out "
            "is delivered to a second worker"
        )
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        # kombu's default sweep runs every 10 s x 10; every few seconds (at most 10) instead.
        "unacked_restore_interval": min(10, max(1, CELERY_VISIBILITY_TIMEOUT // 5)),
        "unacked_restore_throttle": 1,
    }
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Enqueuing never holds up the caller (a request that recorded usage enqueues a budget evaluation):
# on Redis, a publish fails at once when the broker refuses connections (kombu would retry for ~6 s)
# and within CELERY_BROKER_PUBLISH_TIMEOUT seconds when it hangs; the caller logs it and the
# every-minute beat tasks catch up. Longer than kombu's 1 s BRPOP, so workers are unaffected.
CELERY_BROKER_PUBLISH_TIMEOUT = env.float("CELERY_BROKER_PUBLISH_TIMEOUT", default=2.0)
if not 1 < CELERY_BROKER_PUBLISH_TIMEOUT <= 60:
    raise environ.ImproperlyConfigured(
        "CELERY_BROKER_PUBLISH_TIMEOUT must be above 1 (kombu's BRPOP wait) and at most 60"
    )
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "max_retries": 0,
        "socket_connect_timeout": CELERY_BROKER_PUBLISH_TIMEOUT,
        "socket_timeout": CELERY_BROKER_PUBLISH_TIMEOUT,
    }

# --- costcontrol --------------------------------------------------------------
# The seeds' names; later issues (budgets, alerts, GPU, batches) read them.
MONTHLY_BUDGET = env_decimal("MONTHLY_BUDGET", "250")
GPU_BURST = env_bool("GPU_BURST", False)
GPU_BURST_COST_DOLLARS = env_decimal("GPU_BURST_COST_DOLLARS", "0.50")
GPU_COST_DAILY_THRESHOLD = env_decimal("GPU_COST_DAILY_THRESHOLD", "25")
GPU_COST_MONTHLY_THRESHOLD = env_decimal("GPU_COST_MONTHLY_THRESHOLD", "100")
GPU_USAGE_CHECK_INTERVAL_SECONDS = env.int("GPU_USAGE_CHECK_INTERVAL_SECONDS", default=3600)
COST_PER_LEAD_THRESHOLD = env_decimal("COST_PER_LEAD_THRESHOLD", "3.00")
# Set: `bootstrap` creates the budget template "Daily per end user" (scope subject:*, daily): every end
# user gets a budget of this amount (USD) of their own on first use. Unset: none.
DEFAULT_DAILY_BUDGET = env_decimal_optional("DEFAULT_DAILY_BUDGET")
# Off: usage is still recorded, but budgets are never checked and no alert is raised.
ENABLE_COST_MONITORING = env_bool("ENABLE_COST_MONITORING", True)
# A batch whose cost per lead is this many percent above the median of the previous 7 days alerts.
COST_PER_LEAD_REGRESSION_PERCENT = env_decimal("COST_PER_LEAD_REGRESSION_PERCENT", "40")
# What a batch produces, in the admin, reports and messages ("lead" -> "leads").
LEAD_UNIT_NAME = env.str("LEAD_UNIT_NAME", default="lead")
BUDGET_RESERVATION_TTL_SECONDS = env.int("BUDGET_RESERVATION_TTL_SECONDS", default=15 * 60)
# More values of one budget template than this reaching a level in one alert pass: one digest message.
BUDGET_DIGEST_AFTER = env.int("BUDGET_DIGEST_AFTER", default=10)

# --- alerts and notifications --------------------------------------------------
# Links in notifications point here (the admin's address as users reach it). Unset, the address
# `make run` serves (COSTCONTROL_RUN_URL, which the Makefile exports to web, worker and beat alike:
# honcho gives each process its own PORT). Required in production (settings/production.py).
SITE_URL = env.str("SITE_URL", default=env.str("COSTCONTROL_RUN_URL", default="http://127.0.0.1:8000"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="costcontrol@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Transient delivery errors are retried after 30 s, 1 min, 2 min ... at most 1 h apart;
# after NOTIFICATION_MAX_ATTEMPTS tries (about 8 hours) a notification is a dead letter.
NOTIFICATION_RETRY_BASE_SECONDS = env.int("NOTIFICATION_RETRY_BASE_SECONDS", default=30)
NOTIFICATION_RETRY_MAX_SECONDS = env.int("NOTIFICATION_RETRY_MAX_SECONDS", default=3600)
NOTIFICATION_MAX_ATTEMPTS = env.int("NOTIFICATION_MAX_ATTEMPTS", default=15)
# The default channels `bootstrap` creates (once, by name; edit them in the admin afterwards).
# Email: recipients of the default email channel (alerts and the daily report); ALERT_EMAIL_TO, the
# older name, is read when EMAIL_ALERT_RECIPIENTS is unset or empty. ENABLE_EMAIL_ALERTS off: no
# default email channel. Slack: the incoming-webhook URL of a default Slack channel (a secret: also
# SLACK_WEBHOOK_URL_FILE); ENABLE_SLACK_ALERTS defaults to on when the URL is set.
EMAIL_ALERT_RECIPIENTS = env_addresses("EMAIL_ALERT_RECIPIENTS") or env_addresses("ALERT_EMAIL_TO")
ENABLE_EMAIL_ALERTS = env_bool("ENABLE_EMAIL_ALERTS", True)
SLACK_WEBHOOK_URL = (env_secret("SLACK_WEBHOOK_URL", "") or "").strip()
ENABLE_SLACK_ALERTS = env_bool("ENABLE_SLACK_ALERTS", bool(SLACK_WEBHOOK_URL))
# The default alert rules `bootstrap` creates (once, by name; edit them in the admin afterwards).
ALERT_SPEND_HOURLY_THRESHOLD = env_decimal("ALERT_SPEND_HOURLY_THRESHOLD", "50")
ALERT_SPEND_DAILY_THRESHOLD = env_decimal("ALERT_SPEND_DAILY_THRESHOLD", "500")
ALERT_ERROR_RATE_PERCENT = env_decimal("ALERT_ERROR_RATE_PERCENT", "10")
ALERT_TOKENS_HOURLY_THRESHOLD = env_decimal("ALERT_TOKENS_HOURLY_THRESHOLD", "10000")
# An alert rule whose evaluation raises is tried again after this long.
ALERT_RULE_ERROR_BACKOFF_SECONDS = env.int("ALERT_RULE_ERROR_BACKOFF_SECONDS", default=300)
# SSRF guard: channel targets (webhook, Slack, apprise URLs: HTTP, SMTP, syslog alike) may not
# reach private, loopback, link-local, multicast, reserved or unspecified addresses, checked at save
# and on every connection a delivery makes, except inside these networks (comma-separated CIDRs,
# e.g. 10.20.0.0/16,fd00::/8 for an internal receiver). Default: none. Email channels use EMAIL_HOST,
# the operator's own mail server, which is not checked.
CHANNEL_ALLOWED_NETWORKS = env.list("CHANNEL_ALLOWED_NETWORKS", default=[])
for _network in CHANNEL_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network.strip(), strict=False)
    except ValueError:
        raise environ.ImproperlyConfigured(
            f"CHANNEL_ALLOWED_NETWORKS: {_network!r} is not a network (write CIDRs such as 10.20.0.0/16)"
        ) from None

# How far in the future an event's timestamp may lie (clock skew between hosts).
COSTCONTROL_MAX_FUTURE_SKEW_SECONDS = env.int("COSTCONTROL_MAX_FUTURE_SKEW_SECONDS", default=300)
# Providers accepted even though the price catalog has no price for them (explicit amounts only).
COSTCONTROL_EXTRA_PROVIDERS = env.list("COSTCONTROL_EXTRA_PROVIDERS", default=[])
COSTCONTROL_DEFAULT_CATALOG = BASE_DIR / "tracking" / "data" / "default_catalog.json"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Held at INFO whatever LOG_LEVEL says: at DEBUG these print secrets (SQL parameters such as
    # channel URLs; the path and query of every HTTP request, where webhook tokens live; apprise's
    # full service URLs).
    "loggers": {name: {"level": "INFO"} for name in ("django.db.backends", "urllib3", "apprise")},
}

# --- HTTP API ---------------------------------------------------------------------------------
# Requests per minute per API key (a key may set its own); 0 turns the limit off. Counted in
# Django's cache: set CACHE_URL to a Redis cache in production so every process shares the count.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=6000)
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# django-prometheus counts gets, hits and misses of the local-memory cache (its Redis wrapper needs
# django-redis, which we do not install: a Redis CACHE_URL keeps Django's own backend).
CACHES["default"]["BACKEND"] = {
    "django.core.cache.backends.locmem.LocMemCache": "django_prometheus.cache.backends.locmem.LocMemCache",
}.get(CACHES["default"]["BACKEND"], CACHES["default"]["BACKEND"])
# A batch of 1,000 events is ~0.5 MB of JSON; leave room.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# OTLP/HTTP receiver (POST /v1/traces): the span (or resource) attributes whose first present value is an
# entry's subject (the end user), and those kept as tags (each tag value is a rollup scope: name bounded ones).
OTLP_SUBJECT_ATTRIBUTES = env.list("OTLP_SUBJECT_ATTRIBUTES", default=["user.id", "enduser.id"])
OTLP_TAG_ATTRIBUTES = env.list("OTLP_TAG_ATTRIBUTES", default=["gen_ai.agent.name"])
# A cost the sender's own tool reported beside the usage (LiteLLM's response_cost, a span's cost attribute) is
# kept on the entry and flagged when it differs from ours by more than this percentage of ours (float rounding
# below a millionth of the currency never counts).
REPORTED_COST_TOLERANCE_PERCENT = env_decimal("REPORTED_COST_TOLERANCE_PERCENT", "1")
# FOCUS 1.2 export (manage.py export_focus, the admin's "Export as FOCUS"): a folder where the beat task
# "FOCUS export (daily)" writes yesterday's file, focus-YYYY-MM-DD.csv; empty: no daily file.
FOCUS_EXPORT_DIR = env.str("FOCUS_EXPORT_DIR", default="")
# Provider bills (tracking/billing.py): the admin keys stored on billing sources are encrypted with this Fernet
# key (32 url-safe base64 bytes; or BILLING_ENCRYPTION_KEY_FILE); empty: a key derived from DJANGO_SECRET_KEY.
# Changing it (or the secret key it is derived from) makes stored admin keys unreadable: enter them again.
BILLING_ENCRYPTION_KEY = env_secret("BILLING_ENCRYPTION_KEY", "")

# --- metrics (/metrics, for Prometheus) ------------------------------------------------------------
# Business metrics are read from the database at scrape time and kept this many seconds (0: never kept).
METRICS_CACHE_SECONDS = env.float("METRICS_CACHE_SECONDS", default=5.0)
# The model label is bounded: each provider's top N models by USD spend keep their name, the rest are
# summed into model="other" (a key holder could otherwise add a series per invented model name).
METRICS_MODELS_PER_PROVIDER = env.int("METRICS_MODELS_PER_PROVIDER", default=20)
if METRICS_MODELS_PER_PROVIDER < 1:
    raise environ.ImproperlyConfigured(f"METRICS_MODELS_PER_PROVIDER={METRICS_MODELS_PER_PROVIDER} must be 1 or more")
# A budget template's values (one per end user, job ...) are as many as its users: each template exports
# its top N values by utilisation as budgets, and counts of all of them by level.
METRICS_TEMPLATE_TOP_VALUES = env.int("METRICS_TEMPLATE_TOP_VALUES", default=10)
if METRICS_TEMPLATE_TOP_VALUES < 0:
    raise environ.ImproperlyConfigured(f"METRICS_TEMPLATE_TOP_VALUES={METRICS_TEMPLATE_TOP_VALUES} must be 0 or more")
# Protection of /metrics; each one set is required (both set: both). Empty: open (`check --deploy` warns).
METRICS_BEARER_TOKEN = env_secret("METRICS_BEARER_TOKEN", "")  # or METRICS_BEARER_TOKEN_FILE
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])  # addresses or networks (10.0.0.0/8) of the peer
