"""API keys: created in the admin or with `manage.py api_key`, shown once, stored hashed, bound to a
service and optionally a team, optionally restricted to scopes, revocable, expiring."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone


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
        help_text="The team this key belongs to; empty = organisation-wide.",
    )
    prefix = models.CharField("prefix", max_length=16, unique=True, editable=False)
    salt = models.CharField(max_length=32, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(
        "allowed scopes",
        default=list,
        blank=True,
        help_text="Budget and spend scopes this key may check, reserve on or read, e.g. "
        '["service:image-api", "global"]. Empty: any scope.',
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
        from budgets.models import scope_errors

        if not isinstance(self.scopes, list):
            raise ValidationError({"scopes": "a list of scopes such as service:image-api"})
        for scope in self.scopes:
            if problems := scope_errors(scope):
                raise ValidationError({"scopes": f"{scope}: {problems[0]}"})

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows_scope(self, scope: str) -> bool:
        return not self.scopes or scope in self.scopes
