"""Alerts: who hears about spend, and when.

- AlertRule: a condition on a metric over a window (spend, tokens, error rate, ...).
- Alert: one incident with a dedup key. Budgets raise theirs through the same path.
- Channel: where notifications go (email, Slack, Teams, Discord, PagerDuty, webhook, apprise).
- Notification: the outbox, written in the alert change's own transaction; delivered by a task.
- DeliveryAttempt: every try of a notification, for the admin's dead-letter view.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from budgets.levels import FORECAST, Level, level_label, level_rank
from core.money import format_money
from core.scopes import billed_scope, scope_errors, team_scope_errors

LEVEL_CHOICES = Level.choices


class ChannelKind(models.TextChoices):
    EMAIL = "email", "email"
    SLACK = "slack", "Slack"
    MSTEAMS = "msteams", "Microsoft Teams"
    DISCORD = "discord", "Discord"
    PAGERDUTY = "pagerduty", "PagerDuty"
    WEBHOOK = "webhook", "webhook (signed JSON)"
    APPRISE = "apprise", "other (apprise URL)"


class Channel(models.Model):
    name = models.CharField("name", max_length=100, unique=True)
    kind = models.CharField("kind", max_length=20, choices=ChannelKind.choices)
    target = models.TextField(
        "target",
        help_text="email: addresses separated by commas; webhook: the https:// URL to POST to; Slack, Teams, "
        "Discord: the incoming-webhook URL; PagerDuty: pagerduty://INTEGRATION_KEY@API_KEY; other: an apprise URL "
        "of json, xml, form, Mattermost (mmost), ntfy, Power Automate (workflow), rsyslog or mailto.",
    )
    secret = models.CharField(
        "signing secret",
        max_length=200,
        blank=True,
        help_text="webhook only: the key of the X-Costcontrol-Signature HMAC-SHA256 header. Empty: one is generated.",
    )
    min_level = models.CharField(
        "minimum level",
        max_length=10,
        choices=LEVEL_CHOICES,
        default=Level.INFO,
        help_text="Alerts below this level are not sent here.",
    )
    max_per_hour = models.PositiveIntegerField(
        "max notifications per hour",
        default=20,
        help_text="Beyond this, notifications are folded into one digest sent when the hour allows. 0: no limit.",
    )
    is_enabled = models.BooleanField("enabled", default=True)
    disabled_reason = models.TextField(
        "disabled because", blank=True, help_text="Set when a permanent delivery error disabled this channel."
    )
    receives_reports = models.BooleanField("receives the daily report", default=False)
    is_default = models.BooleanField(
        "default channel",
        default=False,
        help_text="Used by budgets and rules that choose no channel (a team's channel: by its team's only).",
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="channels",
        verbose_name="team",
        help_text="The team this channel belongs to: only its team's budgets and rules send here. "
        "Empty = organisation-wide (set up by superusers).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The daily report sums every team's spend.
            models.CheckConstraint(
                condition=Q(team__isnull=True) | Q(receives_reports=False),
                name="channel_reports_organisation_wide",
                violation_error_message="The daily report covers every team: only an organisation-wide channel "
                "(no team) receives it.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def serves(self, team_id: int | None) -> bool:
        """Whether alerts of the team `team_id` (None: organisation-wide) may go here: a team's channel
        serves its team; an organisation-wide one serves everyone."""
        return self.team_id is None or self.team_id == team_id

    def other_teams_links(self) -> str:
        """The budgets and rules linked here that this channel may not serve (after its team changed):
        e.g. "2 budget(s) and 1 rule(s)", or "" when none."""
        if self.team_id is None:
            return ""
        other = ~Q(team=self.team_id) | Q(team__isnull=True)
        rules = self.rules.filter(other).count()
        budgets = self.budgets.filter(other).count()
        parts = [f"{n} {what}" for n, what in ((budgets, "budget(s)"), (rules, "rule(s)")) if n]
        return " and ".join(parts)

    def accepts(self, level: str | None) -> bool:
        """Whether an alert of `level` goes to this channel (resolves follow their alert's level)."""
        return level_rank(level or Level.INFO) >= level_rank(self.min_level)

    def clean(self) -> None:
        from .transports import transport_for

        errors: dict[str, Any] = {}
        try:
            transport_for(self).validate()
        except ValidationError as exc:
            errors.update(exc.message_dict if hasattr(exc, "error_dict") else {"target": exc.messages})
        if self.team_id is not None and self.receives_reports:
            errors["receives_reports"] = [
                "The daily report covers every team: only an organisation-wide channel (no team) receives it."
            ]
        if self.pk is not None and (links := self.other_teams_links()):
            errors["team"] = [
                f"{links} of another team (or organisation-wide) send here: choose other channels there first."
            ]
        if errors:
            raise ValidationError(errors)


class Metric(models.TextChoices):
    SPEND = "spend", "spend of a scope"
    GPU_COST = "gpu_cost", "GPU cost (scope provider:gpu)"
    TOKENS = "tokens", "tokens used"
    ERROR_RATE = "error_rate", "error rate (%)"
    RATE_LIMITED = "rate_limited", "rate-limit hits"
    UNPRICED = "unpriced", "unpriced events"
    COST_PER_LEAD = "cost_per_lead", "cost per lead"
    COST_PER_LEAD_CHANGE = "cost_per_lead_change", "cost per lead above the 7-day median (%)"
    ANOMALY = "anomaly", "spend anomaly (score of the worst spike)"
    BILL_DRIFT = "bill_drift", "metered spend differs from the bill (%)"


class Window(models.TextChoices):
    """Calendar windows follow TIME_ZONE like budget periods; rolling ones end now."""

    HOUR = "hour", "this hour"
    DAY = "day", "today"
    MONTH = "month", "this month"
    LAST_5_MINUTES = "5m", "last 5 minutes"
    LAST_HOUR = "1h", "last 60 minutes"
    LAST_DAY = "24h", "last 24 hours"
    LAST_BATCH = "last_batch", "last closed batch"
    LAST_BILLED_DAY = "billed_day", "last day billed"


# A rule's figures as a person reads them (AlertRule.describe, AlertRule.figure). Money rules read the
# rollups in USD (tracking.selectors.scope_totals) and evaluation reports them in USD.
RULE_CURRENCY = "USD"
MONEY_METRICS = (Metric.SPEND, Metric.GPU_COST, Metric.COST_PER_LEAD)
PERCENT_METRICS = (Metric.ERROR_RATE, Metric.COST_PER_LEAD_CHANGE, Metric.BILL_DRIFT)
CENTS, PER_LEAD_PLACES, MICRO = Decimal("0.01"), Decimal("0.0001"), Decimal("0.000001")
_METRIC_WORDS = {  # what is measured, and how it joins its scope
    Metric.SPEND: ("Spend", "of"),
    Metric.GPU_COST: ("GPU cost", "of"),
    Metric.TOKENS: ("Tokens used", "by"),
    Metric.ERROR_RATE: ("Error rate", "of"),
    Metric.RATE_LIMITED: ("Rate-limit hits", "of"),
    Metric.UNPRICED: ("Unpriced events", "of"),
    Metric.ANOMALY: ("Spend anomaly score", "of"),
    Metric.BILL_DRIFT: ("Difference between metered and billed spend", "of"),
}
_WINDOW_WORDS = {
    Window.HOUR: "this hour",
    Window.DAY: "today",
    Window.MONTH: "this month",
    Window.LAST_5_MINUTES: "over the last 5 minutes",
    Window.LAST_HOUR: "over the last 60 minutes",
    Window.LAST_DAY: "over the last 24 hours",
    Window.LAST_BATCH: "of the last closed batch",
    Window.LAST_BILLED_DAY: "on the last day billed",
}


def _number(value: Decimal, places: Decimal) -> str:
    """A plain number with thousands separators and no trailing zeros: 10,000; 12.35."""
    return f"{value.quantize(places, rounding=ROUND_HALF_UP).normalize():,f}"


# Anomalies are scored per rollup hour against 8 weeks of history: short windows only.
ANOMALY_WINDOWS = (Window.HOUR, Window.DAY, Window.LAST_HOUR, Window.LAST_DAY)


class AlertRule(models.Model):
    name = models.CharField("name", max_length=200, unique=True)
    metric = models.CharField("metric", max_length=20, choices=Metric.choices)
    scope = models.CharField(
        "scope",
        max_length=320,
        default="global",
        help_text="What the metric is measured on: global, provider:X, service:X, model:X, job:X, tag:K=V ...",
    )
    window = models.CharField("window", max_length=12, choices=Window.choices, default=Window.DAY)
    threshold = models.DecimalField(
        "threshold", max_digits=20, decimal_places=9, help_text="Fires when the value is above this."
    )
    level = models.CharField("level", max_length=10, choices=LEVEL_CHOICES, default=Level.WARNING)
    cooldown = models.DurationField(
        "cooldown",
        default=timedelta(hours=1),
        help_text="While it stays firing, notify again no sooner than this (e.g. 01:00:00).",
    )
    channels = models.ManyToManyField(
        "alerts.Channel", blank=True, related_name="rules", help_text="Empty: the default channels."
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="alert_rules",
        verbose_name="team",
        help_text="The team this rule belongs to; empty = organisation-wide.",
    )
    is_enabled = models.BooleanField("enabled", default=True)
    next_evaluation_at = models.DateTimeField(
        "next check",
        null=True,
        blank=True,
        help_text="When the rule is checked again. After a failed check it waits a while before trying again.",
    )
    last_error = models.TextField("last error", blank=True)
    last_value = models.DecimalField("last value", max_digits=24, decimal_places=9, null=True, blank=True)
    last_evaluated_at = models.DateTimeField("last evaluated", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gte=0), name="alertrule_threshold_non_negative"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if problems := scope_errors(self.scope) or team_scope_errors(self.scope, self.team.name if self.team else None):
            errors["scope"] = problems
        if self.threshold is not None and self.threshold < 0:
            errors["threshold"] = ["must be zero or more"]
        if self.cooldown is not None and self.cooldown < timedelta(0):
            errors["cooldown"] = ["must be zero or more"]
        rolling_only = {Metric.RATE_LIMITED, Metric.ERROR_RATE}
        per_lead = {Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE}
        if self.metric == Metric.COST_PER_LEAD and self.window not in (Window.LAST_BATCH, Window.MONTH):
            errors["window"] = ["cost per lead is measured on the last closed batch or this month"]
        elif self.metric == Metric.COST_PER_LEAD_CHANGE and self.window != Window.LAST_BATCH:
            errors["window"] = ["the change of cost per lead is measured on the last closed batch"]
        elif self.metric not in per_lead and self.window == Window.LAST_BATCH:
            errors["window"] = ["only cost per lead is measured on the last closed batch"]
        if self.metric in per_lead and self.team is not None:
            errors["team"] = ["cost per lead rules watch every pipeline: they are organisation-wide (no team)"]
        elif self.metric in per_lead and self.scope != "global":
            errors["scope"] = ["cost per lead rules watch every pipeline: use the scope global"]
        elif self.metric == Metric.ANOMALY and self.window not in ANOMALY_WINDOWS:
            errors["window"] = ["anomalies are scored per hour: use this hour, today, the last 60 minutes or 24 hours"]
        elif self.metric == Metric.BILL_DRIFT and self.window != Window.LAST_BILLED_DAY:
            errors["window"] = ["metered and billed spend are compared on the last day billed"]
        elif self.metric != Metric.BILL_DRIFT and self.window == Window.LAST_BILLED_DAY:
            errors["window"] = ["only the difference from the bill is measured on the last day billed"]
        elif self.metric == Metric.BILL_DRIFT and self.team is not None:
            errors["team"] = ["the providers' bills are the organisation's: difference rules have no team"]
        elif self.metric == Metric.BILL_DRIFT and not billed_scope(self.scope):
            errors["scope"] = ["bills are per provider: use global or provider:NAME"]
        elif self.metric in rolling_only and self.window in (Window.MONTH,):
            errors["window"] = ["use a shorter window for rates and hits"]
        if errors:
            raise ValidationError(errors)

    def describe(self) -> str:
        """The rule as a sentence for a person: "Spend of provider:openai over the last 24 hours above
        50.00 USD" (the whole spend, global, goes unnamed: "Spend today above 500.00 USD")."""
        from tracking.batches import lead_unit

        threshold = self.figure(self.threshold, exact=True)
        window = _WINDOW_WORDS.get(self.window, self.get_window_display())
        if self.metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE):
            # Cost per lead rules watch every pipeline (clean): no scope to name.
            what = f"Cost per {lead_unit()} {window}"
            if self.metric == Metric.COST_PER_LEAD_CHANGE:
                return f"{what} more than {threshold} above the 7-day median"
            return f"{what} above {threshold}"
        what, joined = _METRIC_WORDS.get(self.metric, (self.get_metric_display(), "of"))
        if self.scope != "global":
            what = f"{what} {joined} {self.scope}"
        return f"{what} {window} above {threshold}"

    def figure(self, value: Decimal | None, *, exact: bool = False) -> str:
        """A value or threshold of this rule as a person reads it, by what its metric measures: money
        with its currency (to the cent; a cost per lead to 4 places), a rate as a percent, a count with
        thousands separators, a score to 2 places. `exact`: a threshold as set, to at most 6 places."""
        if value is None:
            return "-"
        if self.metric in MONEY_METRICS:
            places = MICRO if exact else (PER_LEAD_PLACES if self.metric == Metric.COST_PER_LEAD else CENTS)
            return format_money(value.quantize(places, rounding=ROUND_HALF_UP), RULE_CURRENCY)
        shown = _number(value, MICRO if exact else CENTS)
        return f"{shown} %" if self.metric in PERCENT_METRICS else shown


class AlertSource(models.TextChoices):
    BUDGET = "budget", "budget threshold"
    FORECAST = "forecast", "budget forecast"
    RULE = "rule", "alert rule"


class AlertState(models.TextChoices):
    FIRING = "firing", "firing"
    RESOLVED = "resolved", "resolved"


class Alert(models.Model):
    """One incident. Its dedup key names what it is about; a rule's alert re-opens when it fires again,
    a budget level's fires once per period (the period is part of its key)."""

    key = models.CharField("dedup key", max_length=400, unique=True)
    source = models.CharField("source", max_length=10, choices=AlertSource.choices)
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    budget = models.ForeignKey("budgets.Budget", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    budget_period = models.ForeignKey(
        "budgets.BudgetPeriod", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="alerts",
        verbose_name="team",
        help_text="Set when raised: the rule's team, else the budget's; empty = organisation-wide.",
    )
    scope = models.CharField("scope", max_length=320)
    level = models.CharField("level", max_length=10, choices=LEVEL_CHOICES)
    state = models.CharField("state", max_length=10, choices=AlertState.choices, default=AlertState.FIRING)
    title = models.CharField("title", max_length=300)
    message = models.TextField("message")
    value = models.DecimalField("value", max_digits=24, decimal_places=9, null=True, blank=True)
    threshold = models.DecimalField("threshold", max_digits=24, decimal_places=9, null=True, blank=True)
    currency = models.CharField("currency", max_length=3, blank=True)
    first_fired_at = models.DateTimeField("first fired")
    last_fired_at = models.DateTimeField("fired (this time)")
    resolved_at = models.DateTimeField("resolved", null=True, blank=True)
    # Advanced by a conditional UPDATE, so that two evaluators never notify twice.
    next_notify_at = models.DateTimeField(
        "next reminder",
        null=True,
        blank=True,
        help_text="If it is still firing then (and not acknowledged or muted), its channels are reminded. "
        "Empty: no reminder.",
    )
    # The sequence number of the announcements in the notifications' dedup keys: an announcement that no
    # channel took is not counted. What the notifications became is counted from them (alerts.selectors).
    notify_count = models.PositiveIntegerField(
        "times announced",
        default=0,
        help_text="How many times it was announced to its channels (the first time and the reminders).",
    )
    acknowledged_at = models.DateTimeField(
        "acknowledged",
        null=True,
        blank=True,
        help_text="Someone is on it: no more reminders; its channels still hear when it resolves.",
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="acknowledged by",
    )
    muted_until = models.DateTimeField(
        "muted until", null=True, blank=True, help_text="Nothing about this alert is sent until then."
    )

    class Meta:
        ordering = ["-last_fired_at"]
        indexes = [
            # The admin's default list and the report's "alerts fired yesterday".
            models.Index(fields=["state", "-last_fired_at"], name="alert_state_fired_idx"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def label(self) -> str:
        """The word for this alert's level on every screen and message: a budget's forecast alert is
        "forecast to exceed" (its title says when), never a level such as exceeded."""
        return FORECAST if self.source == AlertSource.FORECAST else level_label(self.level)

    @property
    def is_muted(self) -> bool:
        return self.muted_until is not None and self.muted_until > timezone.now()


class NotificationKind(models.TextChoices):
    FIRING = "firing", "firing"
    REPEAT = "repeat", "still firing"
    RESOLVED = "resolved", "resolved"
    DIGEST = "digest", "digest"
    TEST = "test", "test"
    REPORT = "report", "daily report"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENDING = "sending", "sending"
    SENT = "sent", "sent"
    FOLDED = "folded", "folded into a digest"
    FAILED = "failed", "failed (dead letter)"


class Notification(models.Model):
    """The outbox: one message for one channel. Written with the alert change, delivered by a task."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField("kind", max_length=10, choices=NotificationKind.choices)
    level = models.CharField("level", max_length=10, choices=LEVEL_CHOICES, blank=True)
    dedup_key = models.CharField(
        "dedup key",
        max_length=450,
        unique=True,
        help_text="Names this message (the alert, what happened, which announcement): it is written once, "
        "and a receiver sees the same key on every retry.",
    )
    subject = models.CharField("subject", max_length=300)
    text = models.TextField("text")
    html = models.TextField("HTML", blank=True)
    payload = models.JSONField("payload", default=dict, blank=True)
    status = models.CharField(
        "status", max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveIntegerField("attempts", default=0)
    next_attempt_at = models.DateTimeField("next attempt", default=timezone.now)
    claimed_until = models.DateTimeField(
        "being sent until",
        null=True,
        blank=True,
        help_text="A worker is sending it; if that worker stops, another tries again after this time.",
    )
    # The same task delivered again after its worker died takes its claim over at once; any other
    # delivery waits for the claim to run out.
    claimed_by = models.CharField(
        "sent by",
        max_length=255,
        blank=True,
        help_text="The worker's task sending it now.",
    )
    last_error = models.TextField("last error", blank=True)
    digest = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="folded", verbose_name="digest"
    )
    created_at = models.DateTimeField("created", default=timezone.now)
    sent_at = models.DateTimeField("sent", null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The delivery sweep: what is due.
            models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx"),
            # The rate limit: what a channel sent in the last hour.
            models.Index(fields=["channel", "sent_at"], name="notification_channel_sent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.channel.name}: {self.subject}"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    started_at = models.DateTimeField("started")
    duration_ms = models.PositiveIntegerField("duration (ms)", default=0)
    ok = models.BooleanField("delivered")
    permanent = models.BooleanField("permanent failure", default=False)
    error = models.TextField("error", blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"attempt on #{self.notification_id} at {self.started_at:%Y-%m-%d %H:%M:%S}: {'ok' if self.ok else 'failed'}"
