"""API keys: created in the admin or with `manage.py api_key`, shown once, stored hashed, bound to a
service and optionally a team, optionally restricted to scopes, optionally allowed to manage budgets,
revocable, expiring."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.scopes import scope_errors, scope_team, team_scope_errors


class ApiKey(models.Model):
    name = models.CharField("name", max_length=200, help_text="Who uses it, e.g. image-api production.")
    service = models.CharField(
        "service",
        max_length=60,
        help_text="Events recorded with this key belong to this service (an event may not name another).",
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        verbose_name="team",
        help_text="The team this key belongs to: it records the team's usage and sees only the team's "
        "scopes (team:NAME, team:NAME/service:X ...). Empty = organisation-wide.",
    )
    prefix = models.CharField("prefix", max_length=16, unique=True, editable=False)
    salt = models.CharField(max_length=32, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(
        "allowed scopes",
        default=list,
        blank=True,
        help_text="Budget and spend scopes this key may check, reserve on or read, e.g. "
        '["service:image-api", "global"]; a team\'s key, its team\'s scopes only ("team:ml/service:image-api"). '
        "Empty: any scope (of its team).",
    )
    can_manage_budgets = models.BooleanField(
        "manage budgets",
        default=False,
        help_text="Lets the key create budgets and templates and set a template value's own amount "
        "(POST /api/v1/budgets, PUT and DELETE /api/v1/budgets/ID/values/VALUE), on the scopes it may use; "
        "a team's key, its team's budgets only. Off: it reads and checks budgets only.",
    )
    rate_limit_per_minute = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Empty: API_RATE_LIMIT_PER_MINUTE."
    )
    created_at = models.DateTimeField("created at", default=timezone.now, editable=False)
    expires_at = models.DateTimeField("expires at", null=True, blank=True)
    revoked_at = models.DateTimeField("revoked at", null=True, blank=True)
    last_used_at = models.DateTimeField("last used at", null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(service=""), name="apikey_service_required"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.service}, cc_{self.prefix}_…)"

    def clean(self) -> None:
        if not isinstance(self.scopes, list):
            raise ValidationError({"scopes": "a list of scopes such as service:image-api"})
        team_name = self.team.name if self.team else None
        for scope in self.scopes:
            if problems := scope_errors(scope) or team_scope_errors(scope, team_name):
                raise ValidationError({"scopes": f"{scope}: {problems[0]}"})
        # A service belongs to one team: its events, idempotency keys, reservations and batches are
        # told apart by service, so a key of another team for the same service would reach them.
        others = ApiKey.objects.filter(service=self.service).exclude(pk=self.pk).select_related("team")
        other = (others.exclude(team=self.team) if self.team else others.exclude(team__isnull=True)).first()
        if other is not None:
            if self.team is not None and other.team is not None:
                # Said to another team's staff: no name of that team or its key.
                raise ValidationError({"service": f"service {self.service!r} belongs to another team"})
            owner = f"team {other.team.name}" if other.team else "the organisation (a key without a team)"
            raise ValidationError({"service": f"service {self.service!r} belongs to {owner}: key {other.name!r}"})

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows_scope(self, scope: str) -> bool:
        """A team's key reads, checks and reserves only its team's scopes (core.scopes); `scopes`
        narrows that further (empty: every scope the key's team, or the organisation, has)."""
        if self.team_id is not None and scope_team(scope) != self.team.name:
            return False
        return not self.scopes or scope in self.scopes


class OtlpMetricStream(models.Model):
    """Where a cumulative OpenTelemetry metric stream (one metric, one resource, one attribute set) stood
    when last read: its start time, the time of its last point and the running total then. The next
    point records only what it adds (`POST /v1/metrics`); a new start time or a lower total is a restart
    of the exporting process, whose total is then new usage. Rows are per service, like idempotency keys."""

    service = models.CharField(max_length=60)
    stream = models.CharField(max_length=64, help_text="sha256 of the metric name, resource and point attributes")
    start_time_unix_nano = models.BigIntegerField()
    time_unix_nano = models.BigIntegerField()
    value = models.BigIntegerField(help_text="the stream's total (tokens) at time_unix_nano")

    class Meta:
        verbose_name = "OTLP metric stream"
        constraints = [models.UniqueConstraint(fields=["service", "stream"], name="otlpmetricstream_unique")]

    def __str__(self) -> str:
        return f"{self.service} {self.stream[:12]}"
