"""Team-scoped admin pages: a staff member who is not a superuser sees only their teams' objects.

A model admin mixes in `TeamScopedAdminMixin` and names the path from its model to the team
(`team_path = "team"`, `"budget__team"`, `"alert__team"` ...). For a non-superuser:

- change lists, change, delete and history views, actions and autocomplete see only the rows
  whose team is one of the user's teams (Team.members); opening another team's object by URL
  gives the admin's usual "doesn't exist" redirect. Organisation-wide rows (no team) are not
  shown to them: they are the superusers' business.
- the `team` choice on add and change forms lists only their teams and is required.

Superusers see everything, and may leave the team empty (organisation-wide). Django's model
permissions apply on top, as everywhere in the admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from core.models import Team


def sees_every_team(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


def user_teams(request: HttpRequest) -> QuerySet[Team]:
    """The teams the request's user is a member of (a lazy queryset, used as a subquery)."""
    return Team.objects.filter(members=request.user)


def team_scoped(queryset: QuerySet[Any], request: HttpRequest, team_path: str) -> QuerySet[Any]:
    """`queryset` limited to the user's teams along `team_path` (unchanged for a superuser)."""
    if sees_every_team(request):
        return queryset
    return queryset.filter(**{f"{team_path}__in": user_teams(request).values("pk")})


class TeamScopedAdminMixin:
    """Put before admin.ModelAdmin (or an InlineModelAdmin) in the bases."""

    team_path: str = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return team_scoped(super().get_queryset(request), request, self.team_path)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team" and db_field.related_model is Team and not sees_every_team(request):
            kwargs["queryset"] = user_teams(request).order_by("name")
            kwargs["required"] = True
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class TeamListFilter(admin.SimpleListFilter):
    """Filter by team, offering only the teams the user may see (the built-in one lists them all)."""

    title = "team"
    parameter_name = "team"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        teams = Team.objects.all() if sees_every_team(request) else user_teams(request)
        choices = [(str(t.pk), t.name) for t in teams.order_by("name")]
        if sees_every_team(request):
            choices.append(("none", "organisation-wide (no team)"))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        path = getattr(self, "team_path", "team")
        value = self.value()
        if not value:
            return queryset
        if value == "none":
            return queryset.filter(**{f"{path}__isnull": True})
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{f"{path}__pk": int(value)})


def team_list_filter(team_path: str) -> type[TeamListFilter]:
    """A TeamListFilter following `team_path` (e.g. "alert__team")."""
    return type(f"TeamListFilter_{team_path}", (TeamListFilter,), {"team_path": team_path})


def exists_for_teams(request: HttpRequest, model: Any, outer_field: str, inner_field: str) -> Exists:
    """EXISTS (a row of `model` whose `inner_field` is the outer row's `outer_field` and whose team
    is one of the user's): for objects that carry no team but belong to the teams whose rows they
    gather (a batch: the teams whose cost entries its job charges)."""
    return Exists(
        model.objects.filter(**{inner_field: OuterRef(outer_field), "team__in": user_teams(request).values("pk")})
    )
