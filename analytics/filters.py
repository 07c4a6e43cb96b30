"""The cost dashboard's filters: the form (team, range of days, one provider, service or tag) and what it selects
(DashboardFilters: the scope, its window)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from core.models import Team
from core.scopes import scope_inner, team_scope
from tracking.selectors import scope_totals

from .series import (
    HOUR,
    hour_floor,
    local_midnight,
    scope_value,
)

MAX_RANGE_DAYS = 366


class DashboardFilterForm(forms.Form):
    team = forms.ChoiceField(label="Team", required=False)
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="First day (local)."
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Last day, included."
    )
    provider = forms.ChoiceField(label="Provider", required=False)
    service = forms.ChoiceField(label="Service", required=False)
    tag = forms.ChoiceField(label="Tag", required=False)

    def __init__(
        self, data: Any = None, *, teams: list[str] | None = None, organisation: bool = True, **kwargs: Any
    ) -> None:
        """`teams`: the names of the teams the viewer may pick (every team by default); `organisation`:
        whether they may view the whole organisation (superusers), else their first team is the default."""
        teams = list(Team.objects.order_by("name").values_list("name", flat=True)) if teams is None else teams
        # The empty form shows the range it stands for: the last 30 days up to today.
        data = data.copy() if data is not None else {}
        if not organisation and not data.get("team") and teams:
            data["team"] = teams[0]
        today = timezone.localdate()
        end = data.get("end") or today.isoformat()
        data.setdefault("end", end)
        if not data.get("start"):
            try:
                data["start"] = (date.fromisoformat(end) - timedelta(days=29)).isoformat()
            except ValueError:
                data["start"] = ""
        if not data.get("end"):
            data["end"] = today.isoformat()
        super().__init__(data, **kwargs)
        self.fields["team"].choices = [
            *([("", "whole organisation")] if organisation else []),
            *((t, t) for t in teams),
        ]
        self.fields["team"].required = not organisation
        # The other filters offer what the viewed team (or the organisation) spent on; none for a
        # team the viewer may not pick, which the team field refuses.
        team = data.get("team") or ""
        scopes = _known_scopes(team) if team in teams or (organisation and not team) else []
        for name in ("provider", "service", "tag"):
            values = sorted(scope_value(s) for s in scopes if scope_inner(s).startswith(f"{name}:"))
            self.fields[name].choices = [("", "all"), *((v, v) for v in values)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            raise forms.ValidationError({"start": "must be on or before the last day"})
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise forms.ValidationError({"start": f"a range is at most {MAX_RANGE_DAYS} days"})
        chosen = [name for name in ("provider", "service", "tag") if data.get(name)]
        if len(chosen) > 1:
            raise forms.ValidationError(
                f"Filter by one of provider, service or tag at a time (you chose {' and '.join(chosen)}): spend is "
                "rolled up per dimension, so their intersection is not known without reading the whole ledger."
            )
        data["start"], data["end"] = start, end
        return data

    def filters(self) -> DashboardFilters:
        data = self.cleaned_data
        return DashboardFilters(
            start=data["start"],
            end=data["end"],
            provider=data.get("provider") or "",
            service=data.get("service") or "",
            tag=data.get("tag") or "",
            team=data.get("team") or "",
        )


def _known_scopes(team: str = "") -> list[str]:
    """Provider, service and tag scopes that spent in the last 400 days (for the filter choices): the
    organisation's, or team `team`'s copies of them."""
    since = local_midnight(timezone.localdate() - timedelta(days=400))
    within = DashboardFilters(start=since.date(), end=since.date(), team=team).within
    totals = scope_totals(
        start=since,
        end=hour_floor(timezone.now()) + HOUR,
        prefixes=[within("provider:"), within("service:"), within("tag:")],
    )
    return sorted(totals)


@dataclass(frozen=True)
class DashboardFilters:
    start: date
    end: date  # included
    provider: str = ""
    service: str = ""
    tag: str = ""
    team: str = ""  # a team's name: its view; empty: the organisation's

    def within(self, scope: str) -> str:
        """`scope` (or a prefix such as "model:") as this view reads it: the viewed team's copy of it
        (team:NAME, team:NAME/model:X; core.scopes), or itself in the organisation's view. Every
        rollup the dashboard reads goes through here."""
        return team_scope(self.team, scope) if self.team else scope

    @property
    def dimension(self) -> str:
        """The filter's own scope, whoever's spend is viewed: provider:X, service:X, tag:K=V or global."""
        if self.provider:
            return f"provider:{self.provider}"
        if self.service:
            return f"service:{self.service}"
        if self.tag:
            return f"tag:{self.tag}"
        return "global"

    @property
    def filtered(self) -> bool:
        return self.dimension != "global"

    @property
    def scope(self) -> str:
        """The scope every figure is read from (`global`, `provider:openai`, `team:ml`, `team:ml/service:x`)."""
        return self.within(self.dimension)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """[start, end) in UTC, ending no later than the end of the current hour."""
        start = local_midnight(self.start)
        end = min(local_midnight(self.end + timedelta(days=1)), hour_floor(timezone.now()) + HOUR)
        return start, max(end, start)
