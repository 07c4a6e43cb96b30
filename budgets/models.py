"""Budgets: what may be spent. A budget holds a scope's spend against an amount per calendar period."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django_prometheus.models import ExportModelOperationsMixin

from core.money import CURRENCIES, MoneyField, format_money
from core.scopes import (
    SCOPE_KINDS,
    billed_scope,
    scope_errors,
    scope_is_template,
    team_scope_errors,
    template_prefix,
    template_scope_errors,
    template_value,
)

from .levels import Level

DEFAULT_THRESHOLDS = (50, 80, 95, 100)
THRESHOLD_MIN, THRESHOLD_MAX = 1, 1000


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


def threshold_errors(thresholds: Any) -> list[str]:
    if not isinstance(thresholds, list) or not thresholds:
        return ["thresholds must be a non-empty list of percents, e.g. [50, 80, 95, 100]"]
    errors: list[str] = []
    previous: Decimal | None = None
    for item in thresholds:
        if isinstance(item, bool) or not isinstance(item, int | float | Decimal | str):
            errors.append(f"{item!r} is not a number")
            continue
        try:
            value = Decimal(str(item))
        except ArithmeticError:
            errors.append(f"{item!r} is not a number")
            continue
        if not value.is_finite() or not THRESHOLD_MIN <= value <= THRESHOLD_MAX:
            errors.append(f"{item} is outside {THRESHOLD_MIN}-{THRESHOLD_MAX} %")
        if previous is not None and value <= previous:
            errors.append(f"thresholds must be strictly increasing ({item} follows {previous})")
        previous = value
    return errors


class Period(models.TextChoices):
    DAILY = "daily", "daily"
    WEEKLY = "weekly", "weekly (Monday to Sunday)"
    MONTHLY = "monthly", "monthly (calendar month)"
    QUARTERLY = "quarterly", "quarterly (calendar quarter)"
    YEARLY = "yearly", "yearly (calendar year)"
    NONE = "none", "none (lifetime)"


# What a value of a template takes from it (budget_template_sync); its amount only unless overridden.
TEMPLATE_FIELDS = (
    "currency",
    "period",
    "thresholds",
    "rollover",
    "rollover_cap",
    "hard_limit",
    "forecast_alerts",
    "owner_id",
    "team_id",
    "is_active",
)


class BudgetQuerySet(models.QuerySet["Budget"]):
    def listed(self) -> BudgetQuerySet:
        """Plain budgets and templates: what lists show (a template's values are shown on its page)."""
        return self.filter(template__isnull=True)

    def plain(self) -> BudgetQuerySet:
        """Budgets on one scope that are nobody's value: each has one status."""
        return self.filter(template__isnull=True).exclude(_template_q())

    def templates(self) -> BudgetQuerySet:
        return self.filter(_template_q(), template__isnull=True)


def _template_q() -> Q:
    return Q(scope__endswith=":*") | Q(scope__endswith="=*")


class Budget(ExportModelOperationsMixin("budget"), models.Model):
    name = models.CharField("name", max_length=200, help_text="Shown in the admin, alerts and reports.")
    scope = models.CharField(
        "scope",
        max_length=320,
        help_text="Which spend counts against this budget. Choose from the list (the scopes with spend) or type "
        "one: global (everything), provider:openai, service:NAME, model:NAME, subject:USER, job:ID, "
        "tag:KEY=VALUE, team:NAME (a team's whole spend) or team:NAME/provider:openai (a team's spend on one provider). "
        "A template, one budget for each value, ends in *: subject:* (each end user), job:*, service:*, "
        "tag:customer=* (each value of the tag), team:NAME/subject:* (each end user of a team), team:* (each team).",
    )
    template = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="values",
        verbose_name="template",
        help_text="The template this budget is one value of; it follows the template's settings.",
    )
    override = models.BooleanField(
        "own amount",
        default=False,
        help_text='A value of a template with an amount of its own ("alice gets 50, everyone else 5"): the '
        "template's amount no longer applies to it; its other settings still do.",
    )
    evaluated_until = models.DateTimeField(
        "values evaluated until",
        null=True,
        blank=True,
        editable=False,
        help_text="A template: the moment up to which the alert pass has evaluated the values that spent.",
    )
    amount = MoneyField("amount", help_text="What may be spent per period, in the budget's currency.")
    currency = models.CharField(
        "currency",
        max_length=3,
        default="USD",
        help_text="The three-letter code of the amount's currency, e.g. USD or EUR. Only spend recorded in this "
        "currency counts.",
    )
    period = models.CharField(
        "period",
        max_length=10,
        choices=Period.choices,
        default=Period.MONTHLY,
        help_text="How often the budget starts again. Periods follow the calendar in the server's time zone: "
        "a month starts on the 1st at midnight, a week on Monday.",
    )
    thresholds = models.JSONField(
        "thresholds (%)",
        default=default_thresholds,
        help_text="Percents of the limit at which the budget raises an alert, lowest first, each from 1 to 1000. "
        "Each one's level follows from its value: below 80 info, 80 to 95 warning, 95 to 100 critical, "
        "100 and above exceeded.",
    )
    rollover = models.BooleanField(
        "roll over unspent", default=False, help_text="Carry what was not spent into the next period."
    )
    rollover_cap = MoneyField(
        "rollover cap",
        null=True,
        blank=True,
        help_text="The most that may be carried into one period. Empty: no cap.",
    )
    hard_limit = models.BooleanField(
        "hard limit",
        default=False,
        help_text="Refuse spending that would go over the limit: the budget check of the API answers "
        '"deny" and reservations are refused. Without it the budget only warns.',
    )
    count_billed = models.BooleanField(
        "count the providers' bills",
        default=False,
        help_text="For each closed UTC day whose bill was imported (Spend tracking → Billing sources), count what "
        "the provider billed instead of what costcontrol metered: actuals replace estimates, as AWS Budgets does. "
        "Today and days without a bill stay metered. Only for the whole spend (global) or one provider "
        "(provider:NAME), organisation-wide: bills are not broken down by service, user or team.",
    )
    forecast_alerts = models.BooleanField(
        "forecast alerts",
        default=False,
        help_text="Warn when the forecast says the limit will be exceeded before the period ends "
        '("forecast to exceed on <date>").',
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="budgets",
        verbose_name="owner",
        help_text="Who answers for this budget.",
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="budgets",
        verbose_name="team",
        help_text="The team this budget belongs to; empty = organisation-wide.",
    )
    channels = models.ManyToManyField(
        "alerts.Channel",
        blank=True,
        related_name="budgets",
        verbose_name="channels",
        help_text="Where this budget's alerts go. Empty: the default channels.",
    )
    metadata = models.JSONField(
        "notes",
        default=dict,
        blank=True,
        help_text='Your own notes as key/value pairs, e.g. {"cost_centre": "R&D"}.',
    )
    is_active = models.BooleanField(
        "active",
        default=True,
        help_text="Untick to stop checking this budget: no alerts and no status, but it stays in the list.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BudgetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Two first events of a new value create one budget for it, not two.
            models.UniqueConstraint(fields=["template", "scope"], name="budget_template_value_unique"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="budget_amount_non_negative"),
            models.CheckConstraint(
                condition=Q(rollover_cap__isnull=True) | Q(rollover_cap__gte=0), name="budget_rollover_cap_non_negative"
            ),
            models.CheckConstraint(condition=Q(period__in=Period.values), name="budget_period_known"),
            models.CheckConstraint(
                condition=Q(scope="global")
                | Q(
                    *(Q(scope__startswith=f"{kind}:") for kind in SCOPE_KINDS if kind != "global"),
                    _connector=Q.OR,
                ),
                name="budget_scope_kind_known",
            ),
        ]
        indexes = [
            # budget_check: the active budgets of one scope (and of global).
            models.Index(fields=["scope", "is_active"], name="budget_scope_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.scope}, {format_money(self.amount, self.currency)} {self.period})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A template's values follow its settings (and its amount, but those with their own): saving
        the template updates them, one UPDATE per kind, in the same transaction."""
        with transaction.atomic():
            super().save(*args, **kwargs)
            if self.is_template and self.template_id is None:
                fields = {field: getattr(self, field) for field in TEMPLATE_FIELDS}
                values = Budget.objects.filter(template=self)
                values.filter(override=False).update(amount=self.amount, **fields)
                values.filter(override=True).update(**fields)

    @property
    def scope_kind(self) -> str:
        return self.scope.partition(":")[0]

    @property
    def is_template(self) -> bool:
        return scope_is_template(self.scope)

    @property
    def value(self) -> str:
        """A template's value: `alice` for the budget of subject:alice from subject:*."""
        return template_value(self.template.scope, self.scope) if self.template_id else ""

    @property
    def settings_from(self) -> Budget:
        """Where this budget's channels and description come from: its template, or itself."""
        return self.template if self.template_id else self

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        team = self.team.name if self.team else None
        if self.is_template:
            problems = template_scope_errors(self.scope) or team_scope_errors(self.scope, team)
            if self.template_id:
                problems = [*problems, "a value of a template watches one scope, not each value"]
        else:
            problems = scope_errors(self.scope) or team_scope_errors(self.scope, team)
            if self.template_id and not problems and not self.scope.startswith(template_prefix(self.template.scope)):
                problems = [f"{self.scope} is not a value of the template's scope {self.template.scope}"]
        if problems:
            errors["scope"] = problems
        if self.amount is not None and self.amount < 0:
            errors["amount"] = ["must be zero or more"]
        if self.rollover_cap is not None and self.rollover_cap < 0:
            errors["rollover_cap"] = ["must be zero or more (empty: no cap)"]
        if problems := threshold_errors(self.thresholds):
            errors["thresholds"] = problems
        if self.currency not in CURRENCIES:
            errors["currency"] = [f"unknown currency {self.currency!r} (expected an ISO 4217 code such as USD)"]
        if not isinstance(self.metadata, dict):
            errors["metadata"] = ["must be a JSON object"]
        if self.count_billed and (self.team_id or self.is_template or not billed_scope(self.scope)):
            errors["count_billed"] = [
                "bills are per provider and organisation-wide: only a budget of the whole spend (global) or of "
                "one provider (provider:NAME), without a team, can count them"
            ]
        if errors:
            raise ValidationError(errors)


class BudgetPeriod(models.Model):
    """One period of a budget: the history row. Opened on first use or by beat, closed after its end."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="periods")
    start = models.DateTimeField("start")
    end = models.DateTimeField("end", null=True, blank=True, help_text="Empty for a lifetime budget.")
    # While open, the limit follows the budget's amount (+ carried over); closing freezes it.
    limit = MoneyField("limit", help_text="The budget's amount plus what was carried over into the period.")
    carried_over = MoneyField("carried over", default=0)
    spent_at_close = MoneyField("spent at close", null=True, blank=True)
    peak_level = models.CharField("peak level", max_length=10, choices=Level.choices, blank=True)
    closed_at = models.DateTimeField("closed at", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["budget", "-start"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "start"], name="budgetperiod_budget_start_unique"),
            models.CheckConstraint(condition=Q(carried_over__gte=0), name="budgetperiod_carried_non_negative"),
            models.CheckConstraint(
                condition=Q(end__isnull=True) | Q(end__gt=models.F("start")), name="budgetperiod_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget.name} from {self.start:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class ReservationStatus(models.TextChoices):
    ACTIVE = "active", "active"
    SETTLED = "settled", "settled"
    RELEASED = "released", "released"
    EXPIRED = "expired", "expired (not yet released)"


class Reservation(models.Model):
    """Money held on a hard-limit budget's period between admission and the real cost."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="reservations")
    period = models.ForeignKey(BudgetPeriod, on_delete=models.CASCADE, related_name="reservations")
    amount = MoneyField("amount")
    created_at = models.DateTimeField("created at", default=timezone.now)
    expires_at = models.DateTimeField("expires at")
    settled_at = models.DateTimeField("settled at", null=True, blank=True)
    released_at = models.DateTimeField("released at", null=True, blank=True)
    actual = MoneyField("actual", null=True, blank=True, help_text="The real cost reported at settlement.")
    service = models.CharField(
        "service",
        max_length=60,
        blank=True,
        default="",
        help_text="The service whose API key asked for the reservation: only that service may settle or "
        "release it. Empty: asked for by the application itself.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="reservation_amount_non_negative"),
        ]
        indexes = [
            # "Reserved on this period": the unsettled, unreleased reservations of a period.
            models.Index(
                fields=["period", "expires_at"],
                condition=Q(settled_at__isnull=True, released_at__isnull=True),
                name="reservation_held_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"reservation #{self.pk} {format_money(self.amount, self.budget.currency)} on {self.budget.name}"

    def status_at(self, now: Any = None) -> str:
        if self.settled_at is not None:
            return ReservationStatus.SETTLED
        if self.released_at is not None:
            return ReservationStatus.RELEASED
        if self.expires_at <= (now or timezone.now()):
            return ReservationStatus.EXPIRED
        return ReservationStatus.ACTIVE

    @property
    def status(self) -> str:
        return self.status_at()
