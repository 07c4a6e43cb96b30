"""Logged-in admin users for the tests of who sees what: a team's staff member and a superuser."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client


def staff_client(username: str, teams: Iterable[Any], perms: Iterable[str] | None = None) -> tuple[User, Client]:
    """A logged-in staff user (not a superuser), member of `teams`, with the model permissions whose
    codenames `perms` lists (None: every permission there is)."""
    user = User.objects.create_user(username, password="pw-not-used", is_staff=True)
    granted = Permission.objects.all() if perms is None else Permission.objects.filter(codename__in=list(perms))
    user.user_permissions.set(granted)
    for team in teams:
        team.members.add(user)
    client = Client()
    client.force_login(user)
    return user, client


def superuser_client(username: str = "root") -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(username, f"{username}@example.com", "pw-not-used"))
    return client
