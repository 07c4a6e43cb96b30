"""Team-scoped admin pages: a staff member who is not a superuser sees only their teams' objects.

A model admin mixes in `TeamScopedAdminMixin` and names the path from its model to the team
(`team_path = "team"`, `"budget__team"`, `"alert__team"` ...). For a non-superuser:

- change lists, change, delete and history views, actions and autocomplete see only the rows
  whose team is one of the user's teams (Team.members); opening another team's object by URL
  gives the admin's usual "doesn't exist" redirect. Organisation-wide rows (no team) are not
  shown to them: they are the superusers' business.
- the `team` choice on add and change forms lists only their teams and is required.
- the choices of a relation to another model that carries a team (a budget's channels) list only
  their teams' objects and organisation-wide ones.

For everyone, superusers included, a form links a team's object only to objects of its own team or
organisation-wide ones, and an organisation-wide object only to organisation-wide ones (a team's
budget sends to its team's channels, never to another team's).

Superusers see everything, and may leave the team empty (organisation-wide). Django's model
permissions apply on top, as everywhere in the admin.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
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


def carries_team(model: Any) -> bool:
    """Whether `model` belongs to a team by a `team` foreign key (Budget, Channel, ...)."""
    try:
        field = model._meta.get_field("team")
    except FieldDoesNotExist:
        return False
    return bool(field.is_relation and field.related_model is Team)


def linkable(queryset: QuerySet[Any], request: HttpRequest) -> QuerySet[Any]:
    """The objects of a team-carrying model that the user may link to: their teams' and organisation-wide
    ones (all of them for a superuser)."""
    if sees_every_team(request):
        return queryset
    return queryset.filter(Q(team__in=user_teams(request).values("pk")) | Q(team__isnull=True))


def team_link_errors(team: Team | None, linked: list[Model]) -> list[str]:
    """Why an object of `team` (None: organisation-wide) may not link to these objects: one message per
    object of another team (or, for an organisation-wide object, of any team)."""
    team_id = team.pk if team is not None else None
    owner = f"team {team.name}" if team is not None else "an organisation-wide object"
    return [
        f"{obj} belongs to team {obj.team}: {owner} may use only "
        + ("its team's or organisation-wide ones." if team is not None else "organisation-wide ones.")
        for obj in linked
        if obj.team_id is not None and obj.team_id != team_id
    ]


class TeamLinksForm(forms.ModelForm):
    """Checks that the object's team-carrying relations (channels ...) stay within its team."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not carries_team(self._meta.model):
            return cleaned
        if "team" in self.fields:
            team = cleaned.get("team")
            if self.has_error("team"):
                return cleaned
        else:
            team = getattr(self.instance, "team", None)
        for name in self.fields:
            try:
                field = self._meta.model._meta.get_field(name)
            except FieldDoesNotExist:  # a form's own field
                continue
            if name == "team" or not field.is_relation or not carries_team(field.related_model):
                continue
            value = cleaned.get(name)
            linked = [value] if isinstance(value, Model) else list(value or [])
            for message in team_link_errors(team, linked):
                self.add_error(name, message)
        return cleaned


class TeamScopedAdminMixin:
    """Put before admin.ModelAdmin (or an InlineModelAdmin) in the bases."""

    team_path: str = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return team_scoped(super().get_queryset(request), request, self.team_path)  # type: ignore[misc]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        return type(form.__name__, (TeamLinksForm, form), {})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team" and db_field.related_model is Team and not sees_every_team(request):
            kwargs["queryset"] = user_teams(request).order_by("name")
            kwargs["required"] = True
        elif carries_team(db_field.related_model) and "queryset" not in kwargs:
            kwargs["queryset"] = self._linkable_choices(db_field, request, kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if carries_team(db_field.related_model) and "queryset" not in kwargs:
            kwargs["queryset"] = self._linkable_choices(db_field, request, kwargs.get("using"))
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]

    def _linkable_choices(self, db_field: Any, request: HttpRequest, using: str | None) -> QuerySet[Any]:
        """The related objects Django would offer (in the related admin's order), less other teams'."""
        queryset = self.get_field_queryset(using, db_field, request)  # type: ignore[attr-defined]
        if queryset is None:
            queryset = db_field.remote_field.model._default_manager.using(using).all()
        return linkable(queryset, request)


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
