"""Staff isolation (issue 18): a staff member of team alpha who is not a superuser, holding every
permission of every model registered in the admin, walks every admin URL the app registers and never
meets team bravo.

The walk is generic, so that it covers models and pages added later without being edited:

- the URLs come from Django's resolvers over admin.site.get_urls(): for every registered ModelAdmin its
  change list (and a search for bravo's marker), add page, and the change, history and delete pages of
  every seeded object; the autocomplete of every model with search fields, through every relation that
  points to it; the view-on-site shortcut of every seeded object; the index and every app's page; and
  every other (custom) admin URL: those without arguments are opened, those with arguments are reached
  through the links the walked pages show (the dashboard's CSV exports) or CUSTOM_URL_ARGS.
- team bravo's data is seeded through SEEDS, with "bravo" in every free-text field (names, webhook URLs,
  signing secrets, subjects, services, scopes such as team:bravo/service:...), and no response may
  contain it. Bravo's objects' change and history pages answer as objects that do not exist.
- every registered model must have a seeded object of team bravo, or be organisation-wide by nature
  and listed in ORGANISATION_WIDE with the reason: a new model fails here until it is one or the other.

Team alpha is seeded the same way (with "alpha"), and each seeded model's change list must show
alpha's object: a walk that sees nothing proves nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.test import Client
from django.urls import Resolver404, URLPattern, URLResolver, resolve, reverse
from django.utils import timezone

from alerts.models import DeliveryAttempt
from api.keys import api_key_issue
from budgets.models import Budget
from budgets.services import budget_reserve
from budgets.templates import budget_override_set
from core.models import Team
from core.teams import carries_team
from tests.factories import (
    AlertFactory,
    AlertRuleFactory,
    BudgetFactory,
    ChannelFactory,
    NotificationFactory,
    TeamFactory,
)
from tracking.batches import batch_cost_compute, batch_finish, batch_start
from tracking.models import SpendRollup
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

MARK = "bravo"  # team bravo's name, and in every text field of its objects
OURS = "alpha"
# What searches and autocompletes ask for: it finds bravo's objects (the admin searches for contained
# text), and the pages that echo it back do not show the marker for that.
SEARCH = MARK[1:]

# Registered models whose rows belong to no team by nature; each with why.
ORGANISATION_WIDE = {
    "auth.user": "people are the organisation's directory (usernames carry no team data); only superusers "
    "change users (core/admin.py), so seeded users carry no marker",
    "auth.group": "groups of permissions are the organisation's; only superusers change them (core/admin.py)",
    "django_celery_beat.periodictask": "the beat schedule is the operator's: its tasks carry no team",
    "django_celery_beat.clockedschedule": "a schedule of the beat: no team",
    "django_celery_beat.crontabschedule": "a schedule of the beat: no team",
    "django_celery_beat.solarschedule": "a schedule of the beat: no team",
    "django_celery_beat.intervalschedule": "a schedule of the beat: no team",
    "tracking.price": "the price list is the same for every team",
    "tracking.gpudevice": "GPUs are the organisation's hardware, sampled by one sampler",
    "tracking.gpusample": "samples of the organisation's GPUs; GPU time is charged without a team",
    "tracking.gpusettings": "one organisation-wide switch (GPU burst mode)",
    "tracking.billingsource": "the providers' organization accounts and their admin keys: superusers only",
    "tracking.billingday": "the import status of an organization's provider bill: superusers only",
    "tracking.billedcost": "a line of the organization's provider bill (no team is billed): superusers only",
    "analytics.dashboard": "no rows: its pages (the dashboard, its CSV exports) are walked as custom URLs",
}

# Free-text fields of seeded objects that cannot carry the marker; each with why.
UNMARKED_FIELDS = {
    "currency": "an ISO 4217 code",
    "api.apikey.prefix": "generated with the key",
    "api.apikey.salt": "generated with the key, never shown",
    "api.apikey.hashed": "generated with the key, never shown",
    "budgets.budget.thresholds": "percents",
    "tracking.costentry.prices_used": "written by pricing",
    "tracking.costentry.note": "written by a correction only",
    "tracking.costentry.provider": "a provider of the price catalog",
    "tracking.costentry.operation": "one of the operations prices know",
    "tracking.costentry.speed": "one of the speeds prices know",
    "tracking.costentry.service_tier": "one of the tiers prices know",
    "alerts.notification.claimed_by": "a worker's id while it delivers",
}

# Custom admin URLs taking arguments that no walked page links to: name -> the kwargs to open them with.
CUSTOM_URL_ARGS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "auth_user_password_change": lambda: [{"id": pk} for pk in User.objects.values_list("pk", flat=True)],
    # The own-amount form of a template (a POST target): every template's, bravo's included.
    "budgets_budget_override": lambda: [
        {"object_id": pk} for pk in Budget.objects.templates().values_list("pk", flat=True)
    ],
    # A CSV billing source's upload page: superusers only, so refused before any source is looked up.
    "tracking_billingsource_upload": lambda: [{"source_id": 1}],
}

SITE_URLS_NOT_WALKED = {"logout": "POST only; it would end the walk's session"}


# --- team data ------------------------------------------------------------------------------------


@dataclass
class Seeded:
    team: Team
    member: User
    objects: list[models.Model] = field(default_factory=list)
    by_name: dict[str, Any] = field(default_factory=dict)


def seed_channel(s: Seeded, n: str) -> list[models.Model]:
    channel = ChannelFactory(
        name=f"{n} hook",
        kind="webhook",
        target=f"https://hooks.example.com/{n}-token-7f3a",
        secret=f"{n}-signing-secret",
        disabled_reason=f"{n} hook answered 410",
        team=s.team,
    )
    s.by_name["channel"] = channel
    return [channel]


def seed_budget(s: Seeded, n: str) -> list[models.Model]:
    budget = BudgetFactory(
        name=f"{n} budget",
        scope=f"team:{n}/service:{n}-svc",
        team=s.team,
        owner=s.member,
        amount=Decimal("1.5"),  # at risk once seed_spend records 1.25 (the dashboard lists it)
        hard_limit=True,
        metadata={"note": f"{n} note"},
    )
    budget.channels.set([s.by_name["channel"]])
    reservations = budget_reserve(scopes=[budget.scope], amount=Decimal("0.1"), service=f"{n}-svc")
    s.by_name["budget"] = budget
    return [budget, *reservations]


def seed_budget_template(s: Seeded, n: str) -> list[models.Model]:
    template = BudgetFactory(
        name=f"{n} per user", scope=f"team:{n}/subject:*", team=s.team, owner=s.member, metadata={"note": f"{n} note"}
    )
    value = budget_override_set(template=template, value=f"{n}-user", amount="2")
    Budget.objects.filter(pk=value.pk).update(metadata={"note": f"{n} note"})
    value.refresh_from_db()
    return [template, value]


def seed_rule_alert_and_notifications(s: Seeded, n: str) -> list[models.Model]:
    rule = AlertRuleFactory(
        name=f"{n} rule", scope=f"team:{n}/service:{n}-svc", team=s.team, last_error=f"{n} rule error"
    )
    rule.channels.set([s.by_name["channel"]])
    now = timezone.now()
    alert = AlertFactory(
        key=f"{n}-alert",
        source="rule",
        rule=rule,
        team=s.team,
        scope=f"team:{n}/service:{n}-svc",
        title=f"{n} alert",
        message=f"{n} spend above the threshold",
        first_fired_at=now,
        last_fired_at=now,
    )
    notification = NotificationFactory(
        channel=s.by_name["channel"],
        alert=alert,
        dedup_key=f"{n}-notification",
        subject=f"{n} subject",
        text=f"{n} text",
        html=f"<p>{n} html</p>",
        payload={"alert": {"key": f"{n}-alert"}},
        last_error=f"{n} delivery error",
    )
    DeliveryAttempt.objects.create(notification=notification, started_at=now, ok=False, error=f"{n} attempt error")
    # A test send: no alert, the channel's team.
    test_send = NotificationFactory(
        channel=s.by_name["channel"],
        kind="test",
        dedup_key=f"{n}-test",
        subject=f"{n} test",
        text=f"{n} test text",
        html=f"<p>{n} test</p>",
        payload={"test": n},
        last_error=f"{n} test error",
    )
    return [rule, alert, notification, test_send]


def seed_spend(s: Seeded, n: str) -> list[models.Model]:
    batch = batch_start(
        name=f"{n}-pipeline",
        job=f"{n}-job",
        note=f"{n} note",
        service=f"{n}-svc",
        at=timezone.now() - timedelta(hours=1),
    )
    entry = cost_entry_record(
        provider="openai",
        model=f"{n}-model",
        variant=f"{n}-variant",
        region=f"{n}-region",
        service=f"{n}-svc",
        subject=f"{n}-user-1",
        job=f"{n}-job",
        team=n,
        tags={f"{n}-tag": f"{n}-value"},
        amount="1.25",
        currency="USD",
        reported_amount="1.30",
        reported_by=f"{n}-proxy",
        input_tokens=1000,
        idempotency_key=f"{n}-entry",
    ).entry
    batch = batch_cost_compute(batch=batch_finish(batch=batch, leads=4))
    rollups = list(SpendRollup.objects.filter(scope__startswith=f"team:{n}"))
    assert rollups, "a team's entry is rolled up in its team's scopes"
    return [entry, batch, *rollups]


def seed_api_key(s: Seeded, n: str) -> list[models.Model]:
    issued = api_key_issue(name=f"{n} key", service=f"{n}-svc", team=s.team, scopes=[f"team:{n}/service:{n}-svc"])
    return [issued.key]


# Each step seeds one kind of team data (in order: later steps use earlier ones through `by_name`).
SEEDS: list[Callable[[Seeded, str], list[models.Model]]] = [
    seed_channel,
    seed_budget,
    seed_budget_template,
    seed_rule_alert_and_notifications,
    seed_spend,
    seed_api_key,
]


def seed(name: str, member: User) -> Seeded:
    team = TeamFactory(name=name)
    team.members.add(member)
    seeded = Seeded(team=team, member=member, objects=[team])
    for step in SEEDS:
        seeded.objects.extend(step(seeded, name))
    return seeded


@pytest.fixture
def world(gpt4o_prices) -> tuple[Client, Seeded, Seeded]:
    """Alice, staff of team alpha with every permission of every registered model, logged in; both
    teams' data; and a superuser's history entries on bravo's objects."""
    alice = User.objects.create_user("alice", password="pw-not-used", is_staff=True)
    bob = User.objects.create_user("bob", password="pw-not-used", is_staff=True)
    root = User.objects.create_superuser("root", password="pw-not-used")
    registered = [ContentType.objects.get_for_model(m, for_concrete_model=False) for m in admin.site._registry]
    alice.user_permissions.set(Permission.objects.filter(content_type__in=registered))
    alpha, bravo = seed(OURS, alice), seed(MARK, bob)
    for obj in bravo.objects:
        LogEntry.objects.create(
            user=root,
            content_type=ContentType.objects.get_for_model(obj),
            object_id=str(obj.pk),
            object_repr=str(obj)[:200],
            action_flag=CHANGE,
            change_message=f"{MARK}: changed by a superuser",
        )
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client, alpha, bravo


def label(model: type[models.Model]) -> str:
    return model._meta.label_lower


# --- the seeding is complete ----------------------------------------------------------------------


def test_every_registered_model_has_a_seeded_object_of_team_bravo_or_is_organisation_wide_by_nature(world):
    _, _, bravo = world
    seeded = {label(type(obj)) for obj in bravo.objects}
    registered = {label(model) for model in admin.site._registry}
    missing = sorted(registered - seeded - set(ORGANISATION_WIDE))
    assert not missing, (
        f"registered in the admin but neither seeded for team bravo nor organisation-wide: {missing}. "
        "Add a step to SEEDS in tests/reliability/test_staff_isolation.py that creates one for a team "
        "(with the marker in its text fields), or list the model in ORGANISATION_WIDE with the reason."
    )
    stale = sorted(set(ORGANISATION_WIDE) - registered)
    assert not stale, f"ORGANISATION_WIDE names models no longer registered: {stale}"
    with_team = sorted(name for name in ORGANISATION_WIDE if carries_team(apps.get_model(name)))
    assert not with_team, f"these carry a team, so they are not organisation-wide by nature: {with_team}"


def test_every_free_text_field_of_team_bravos_objects_carries_the_marker(world):
    _, _, bravo = world
    unmarked = []
    for obj in bravo.objects:
        for f in obj._meta.concrete_fields:
            if not isinstance(f, models.CharField | models.TextField | models.JSONField) or f.choices:
                continue
            key = f"{label(type(obj))}.{f.name}"
            if f.name in UNMARKED_FIELDS or key in UNMARKED_FIELDS:
                continue
            if MARK not in str(f.value_from_object(obj)).lower():
                unmarked.append(key)
    assert not unmarked, (
        f"seed these with {MARK!r} in SEEDS (or say why not in UNMARKED_FIELDS): {sorted(set(unmarked))}"
    )


# --- the walk ---------------------------------------------------------------------------------------


@dataclass
class Walk:
    client: Client
    problems: list[str] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    linked: list[str] = field(default_factory=list)

    def get(self, what: str, url: str, *, follow: bool = True, params: dict[str, Any] | None = None) -> Any:
        full = url + ("?" + urlencode(params) if params else "")
        self.visited.add(full)
        response = self.client.get(url, params or {}, follow=follow)
        if response.status_code >= 500:
            error = response.exc_info[1] if getattr(response, "exc_info", None) else ""
            self.problems.append(f"{what}: {full} answered {response.status_code} {error!r}")
            return response
        text = body(response)
        if hit := re.search(MARK, text, re.IGNORECASE):
            snippet = text[max(hit.start() - 100, 0) : hit.end() + 60].replace("\n", " ")
            self.problems.append(f"{what}: {full} shows team bravo's data: ...{snippet}...")
        if "html" in response.get("Content-Type", ""):
            here = response.request["PATH_INFO"]
            self.linked.extend(urljoin(here, html.unescape(href)) for href in re.findall(r'href="([^"#]+)"', text))
        return response

    def expect_missing(self, what: str, url: str, *, forbidden_ok: bool = False) -> None:
        """Another team's object: answered like one that does not exist (a redirect to the index
        with a message, or 404); for a delete page of an admin that deletes nothing, 403 too."""
        response = self.get(what, url, follow=False)
        if response.status_code == 404 or (forbidden_ok and response.status_code == 403):
            return
        if response.status_code == 302 and response.url == reverse("admin:index"):
            self.get(f"{what} (the index it redirects to)", response.url)
            return
        self.problems.append(f"{what}: {url} answered {response.status_code}, not as a missing object")


def body(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def named_patterns(
    patterns: list[Any], prefix_params: frozenset[str] = frozenset()
) -> Iterator[tuple[str, frozenset[str]]]:
    """(name, argument names) of every named URL under these patterns, through includes."""
    for pattern in patterns:
        params = prefix_params | frozenset(pattern.pattern.regex.groupindex)
        if isinstance(pattern, URLResolver):
            yield from named_patterns(pattern.url_patterns, params)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield pattern.name, params


STANDARD = ("changelist", "add", "history", "delete", "change")


def test_a_teams_staff_member_walking_every_admin_url_never_meets_another_team(world):
    client, alpha, bravo = world
    walk = Walk(client)
    site = admin.site
    urls = dict(named_patterns(site.get_urls()))
    standard: dict[str, tuple[type[models.Model], str]] = {}
    for model in site._registry:
        for suffix in STANDARD:
            name = f"{model._meta.app_label}_{model._meta.model_name}_{suffix}"
            if name in urls:
                standard[name] = (model, suffix)

    def url(name: str, *args: Any, **kwargs: Any) -> str:
        return reverse(f"admin:{name}", args=args, kwargs=kwargs)

    # Each registered model: its change list (searched for bravo's marker too), add page and objects.
    for model, model_admin in site._registry.items():
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        ours = [o for o in alpha.objects if type(o) is model]
        theirs = [o for o in bravo.objects if type(o) is model]
        if f"{info}_changelist" in urls:
            response = walk.get(f"{label(model)} change list", url(f"{info}_changelist"))
            if ours and response.status_code == 200 and OURS not in body(response):
                walk.problems.append(f"{label(model)} change list does not show team alpha's objects: a blind walk")
            if model_admin.search_fields:
                walk.get(f"{label(model)} search", url(f"{info}_changelist"), params={"q": SEARCH})
        if f"{info}_add" in urls:
            walk.get(f"{label(model)} add page", url(f"{info}_add"))
        # Every other object (alpha's, the organisation's): whatever the page answers, nothing of bravo's.
        their_pks = {obj.pk for obj in theirs}
        others = model._default_manager.exclude(pk__in=their_pks)[:50] if model._meta.managed else []
        for obj in others:
            for suffix in ("change", "history", "delete"):
                if f"{info}_{suffix}" in urls:
                    walk.get(f"{label(model)} {suffix} page of {obj.pk}", url(f"{info}_{suffix}", obj.pk))
        for obj in theirs:
            for suffix in ("change", "history", "delete"):
                if f"{info}_{suffix}" in urls:
                    walk.expect_missing(
                        f"{label(model)} {suffix} page of bravo's {obj.pk}",
                        url(f"{info}_{suffix}", obj.pk),
                        forbidden_ok=suffix == "delete",
                    )

    # Autocomplete: every model with search fields, through every relation that points to it.
    for model, model_admin in site._registry.items():
        if not model_admin.search_fields:
            continue
        for source in apps.get_models():
            for f in source._meta.get_fields():
                if not (f.is_relation and f.concrete and f.related_model is model):
                    continue
                for term in ("", SEARCH):
                    walk.get(
                        f"autocomplete of {label(model)} through {label(source)}.{f.name}",
                        url("autocomplete"),
                        params={
                            "app_label": source._meta.app_label,
                            "model_name": source._meta.model_name,
                            "field_name": f.name,
                            "term": term,
                        },
                    )

    # The site's own pages.
    custom_with_args = {}
    for name, params in urls.items():
        if name in standard or name in SITE_URLS_NOT_WALKED:
            continue
        if name == "autocomplete":
            continue  # above
        if name == "app_list":
            for app_label in sorted({m._meta.app_label for m in site._registry}):
                walk.get(f"app page {app_label}", url(name, app_label=app_label))
        elif name == "view_on_site":
            for obj in bravo.objects:
                ct = ContentType.objects.get_for_model(obj)
                walk.get(f"view on site of bravo's {label(type(obj))} {obj.pk}", url(name, ct.pk, obj.pk))
        elif not params:
            walk.get(f"admin URL {name}", url(name))  # the index, a dashboard, a price rules page ...
        else:
            custom_with_args[name] = params

    # Custom URLs with arguments: those the walked pages link to (the dashboard's exports), and CUSTOM_URL_ARGS.
    reached: set[str] = set()
    while walk.linked:
        href = walk.linked.pop()
        path = urlsplit(href).path
        try:
            match = resolve(path)
        except Resolver404:
            continue
        if match.namespace == "admin" and match.url_name in custom_with_args and href not in walk.visited:
            reached.add(match.url_name)
            walk.get(f"admin URL {match.url_name} (linked)", href)
    for name, values in CUSTOM_URL_ARGS.items():
        for kwargs in values():
            reached.add(name)
            walk.get(f"admin URL {name}", url(name, **kwargs))
    for name in sorted(set(custom_with_args) - reached):
        walk.problems.append(
            f"admin URL {name} takes {sorted(custom_with_args[name])} and no walked page links to it: "
            "give its arguments in CUSTOM_URL_ARGS"
        )

    assert len(walk.visited) > 100  # the walk went everywhere
    assert not walk.problems, "\n".join([f"{len(walk.problems)} problem(s):", *walk.problems])


def test_the_walk_does_see_another_teams_data_when_it_leaks(world, monkeypatch):
    """The walker's own check: with the channel admin's team scoping undone, it reports bravo's channel."""
    from alerts.admin_delivery import ChannelAdmin

    client, _, bravo = world
    monkeypatch.setattr(ChannelAdmin, "get_queryset", admin.ModelAdmin.get_queryset)
    walk = Walk(client)
    walk.get("channel change list", reverse("admin:alerts_channel_changelist"))
    channel = next(o for o in bravo.objects if label(type(o)) == "alerts.channel")
    walk.expect_missing("bravo's channel", reverse("admin:alerts_channel_change", args=[channel.pk]))
    assert any(p.startswith("channel change list") for p in walk.problems)
    assert any("not as a missing object" in p for p in walk.problems)
