"""Team: a group of people that entries, budgets, rules and alerts may belong to."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Team(models.Model):
    """A group of people. Entries, budgets, rules and alerts may belong to one; none = organisation-wide."""

    name = models.CharField(
        "name",
        max_length=100,
        unique=True,
        # The first "/" of a scope ends the team's name (team:NAME/model:X, core.scopes).
        validators=[RegexValidator(r"^[^/\s]([^/]*[^/\s])?$", "A team name has no '/' and no surrounding spaces.")],
        help_text="Shown in reports; also the team:NAME scope (and team:NAME/service:X and the like).",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="costcontrol_teams", verbose_name="members"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        # Created by tracking's first migration; the model moved here with its rows (core/0001).
        db_table = "tracking_team"

    def __str__(self) -> str:
        return self.name
