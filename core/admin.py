"""Teams, users and groups in the admin. Who belongs where, and who may do what, is changed by superusers
only, whatever permissions a staff member holds: a team's staff member with change_team could otherwise
join any team, and one with change_user or change_group could make themself a superuser or give
themself any permission. Staff with the view permissions see their own teams and the users and groups,
read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from .models import Team
from .teams import sees_every_team, user_teams


class SuperusersChangeAdminMixin:
    """Adding, changing and deleting are for superusers; others with a view permission only look."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return sees_every_team(request) and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return sees_every_team(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return sees_every_team(request) and super().has_delete_permission(request, obj)  # type: ignore[misc]


@admin.register(Team)
class TeamAdmin(SuperusersChangeAdminMixin, admin.ModelAdmin):
    list_display = ("name", "member_count", "created_at")
    search_fields = ("name",)
    filter_horizontal = ("members",)
    ordering = ("name",)
    readonly_fields = ("created_at",)
    list_per_page = 100

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        queryset = super().get_queryset(request)
        if not sees_every_team(request):
            queryset = queryset.filter(pk__in=user_teams(request).values("pk"))
        return queryset.annotate(member_count=Count("members", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Team) -> int:
        return obj.member_count  # type: ignore[attr-defined]


# Replaces django.contrib.auth's registrations (imported above, so they are made before these).
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(SuperusersChangeAdminMixin, DjangoUserAdmin):
    pass


@admin.register(Group)
class GroupAdmin(SuperusersChangeAdminMixin, DjangoGroupAdmin):
    pass
