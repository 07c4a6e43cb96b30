"""Create, list and revoke API keys without the admin or a shell.

python manage.py api_key create --service image-api --name "image-api prod"   # prints the key once
KEY=$(python manage.py api_key create --service image-api --quiet)
python manage.py api_key create --service etl --team data --scope service:etl --scope global
python manage.py api_key create --service finance --manage-budgets   # may create budgets (POST /api/v1/budgets)
python manage.py api_key list
python manage.py api_key revoke cc_3f9a1b2c4d5e            # the prefix, as `list` shows it
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from api.keys import KEY_PREFIX, api_key_issue, api_key_revoke
from api.models import ApiKey
from core.models import Team


def _state(key: ApiKey) -> str:
    if key.revoked_at:
        return "revoked"
    if key.expires_at and key.expires_at <= timezone.now():
        return "expired"
    return "active"


class Command(BaseCommand):
    help = "Create an API key (printed once), list the keys, or revoke one."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key; prints it once (only its hash is stored).")
        create.add_argument("--service", required=True, help="The service its events belong to, e.g. image-api.")
        create.add_argument("--name", default="", help="Who uses it (default: the service's name).")
        create.add_argument("--team", default=None, help="The team's name (default: organisation-wide).")
        create.add_argument(
            "--scope",
            action="append",
            default=[],
            dest="scopes",
            help="A scope the key may check, reserve on or read, e.g. service:image-api; repeat for more. "
            "None: any scope.",
        )
        create.add_argument(
            "--manage-budgets",
            action="store_true",
            help="Let the key create budgets and templates and set a value's own amount (on its scopes).",
        )
        create.add_argument("--rate-limit", type=int, default=None, help="Requests per minute (default: the setting).")
        create.add_argument("--expires-in-days", type=int, default=None, help="Expire after this many days.")
        create.add_argument("--quiet", action="store_true", help="Print only the key (for scripts).")
        listing = sub.add_parser("list", help="Every key: prefix, name, service, team, scopes, state.")
        listing.add_argument("--service", default=None, help="Only this service's keys.")
        revoke = sub.add_parser("revoke", help="Revoke a key: requests with it get 401 from now on.")
        revoke.add_argument("prefix", help="The key's prefix as `list` shows it (cc_<prefix>), or the whole key.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            ) from None

    def _create(self, options: dict[str, Any]) -> None:
        team = None
        if options["team"] is not None:
            team = Team.objects.filter(name=options["team"]).first()
            if team is None:
                known = ", ".join(Team.objects.values_list("name", flat=True)) or "none yet"
                raise CommandError(f"no team named {options['team']!r} (teams: {known})")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be 1 or more")
        issued = api_key_issue(
            name=options["name"] or options["service"],
            service=options["service"],
            team=team,
            scopes=options["scopes"],
            rate_limit_per_minute=options["rate_limit"],
            can_manage_budgets=options["manage_budgets"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
        if options["quiet"]:
            self.stdout.write(issued.plaintext)
            return
        self.stdout.write(
            f"API key {issued.key.name} for service {issued.key.service}"
            f"{f' (team {team.name})' if team else ''}:\n{issued.plaintext}\n"
            "Copy it now: it is not shown again (only its hash is stored)."
        )

    def _list(self, options: dict[str, Any]) -> None:
        keys = ApiKey.objects.select_related("team")
        if options["service"]:
            keys = keys.filter(service=options["service"])
        rows = [
            (
                f"{KEY_PREFIX}{key.prefix}",
                key.name,
                key.service,
                key.team.name if key.team else "-",
                ",".join(key.scopes) or "any",
                _state(key),
                key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never",
            )
            for key in keys
        ]
        if not rows:
            self.stdout.write("No API keys.")
            return
        header = ("key", "name", "service", "team", "scopes", "state", "last used")
        widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            self.stdout.write(
                "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )

    def _revoke(self, options: dict[str, Any]) -> None:
        given = options["prefix"].removeprefix(KEY_PREFIX)
        prefix = given.split("_", 1)[0]  # a whole key names its prefix too
        key = ApiKey.objects.filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"no API key {KEY_PREFIX}{prefix} (see `manage.py api_key list`)")
        if api_key_revoke(key=key):
            self.stdout.write(
                f"API key {KEY_PREFIX}{prefix} ({key.name}) revoked: requests with it get 401 from now on."
            )
        else:
            self.stdout.write(f"API key {KEY_PREFIX}{prefix} ({key.name}) was already revoked.")
