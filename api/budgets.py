"""The budget operations of the JSON API: check, reserve, settle and release; list budgets and templates,
create them, a template value's own amount."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest
from ninja import Query, Schema, Status
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
)

from budgets.models import Budget, Period, Reservation, default_thresholds
from budgets.selectors import (
    BudgetStatus,
    TemplateSummary,
    budget_check,
    budget_statuses,
    template_summary,
    with_forecasts,
)
from budgets.services import BudgetExceeded, budget_reserve, reservation_release, reservation_settle
from budgets.templates import budget_override_clear, budget_override_set, template_has_values
from core.money import parse_money
from core.money import plain_money as _money
from core.scopes import template_prefix, template_value

from .api import (
    COMMON,
    SCOPE_PATTERN,
    ApiError,
    MoneyIn,
    Text,
    api,
    django_invalid,
    field_errors,
    invalid,
    json_int,
    no_nul,
    only_query_params,
    scope_allowed,
)
from .events import UsageIn
from .models import ApiKey

# --- budgets -----------------------------------------------------------------------------------


class CheckIn(Schema):
    model_config = ConfigDict(extra="forbid")
    scope: Text = Field(min_length=1, max_length=320, pattern=SCOPE_PATTERN, examples=["model:gpt-4o"])
    amount: MoneyIn = Field(default=Decimal(0), description="what the work would cost")


class ReserveIn(Schema):
    model_config = ConfigDict(extra="forbid")
    scopes: list[Annotated[str, Field(min_length=1, max_length=320, pattern=SCOPE_PATTERN), AfterValidator(no_nul)]] = (
        Field(min_length=1, max_length=20)
    )
    amount: MoneyIn
    ttl_seconds: json_int(gt=0, le=7 * 24 * 3600) | None = None


class SettleIn(Schema):
    """Exactly one of the two: the amount, or the call's usage, which the server prices now."""

    model_config = ConfigDict(extra="forbid")
    actual: MoneyIn | None = Field(default=None, description="the real cost")
    usage: UsageIn | None = Field(default=None, description="the call's usage, priced as recording it would be")


def _status_json(status: BudgetStatus) -> dict[str, Any]:
    budget, period = status.budget, status.period
    return {
        "id": budget.pk,
        "name": budget.name,
        "scope": budget.scope,
        "period": budget.period,
        "currency": budget.currency,
        "limit": _money(status.limit),
        "spent": _money(status.spent),
        "reserved": _money(status.reserved),
        "remaining": _money(status.remaining),
        "available": _money(status.available),
        "utilisation": None if status.utilisation is None else _money(status.utilisation),
        "level": status.level_label,
        "hard_limit": budget.hard_limit,
        "count_billed": budget.count_billed,
        "allowed": status.allowed,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat() if period.end else None,
    }


def _forecast_json(status: BudgetStatus) -> dict[str, Any] | None:
    forecast = status.forecast
    if forecast is None:
        return None
    return {
        "amount": _money(forecast.amount),
        "low": _money(forecast.low),
        "high": _money(forecast.high),
        "interval": _money(forecast.interval),
        "method": forecast.method,
        "exceed_at": forecast.exceed_at.isoformat() if forecast.exceed_at else None,
        "label": status.forecast_label,
    }


@api.post(
    "/budgets/check", response={200: dict, 403: dict, 422: dict, **COMMON}, summary="Where the budgets of a scope stand"
)
def budgets_check(request: HttpRequest, payload: CheckIn) -> Any:
    scope_allowed(request.auth, payload.scope)  # type: ignore[attr-defined]
    try:
        statuses = budget_check(scope=payload.scope, amount=payload.amount)
    except DjangoValidationError as exc:
        raise django_invalid(exc) from None
    # A budget the key may not read (the organisation's global one, for a team's key) still decides
    # `allowed`, but its figures are not shown.
    shown = [_status_json(s) for s in statuses if request.auth.allows_scope(s.budget.scope)]  # type: ignore[attr-defined]
    return Status(200, {"allowed": all(s.allowed for s in statuses), "budgets": shown})


def _reservation_json(reservation: Reservation) -> dict[str, Any]:
    return {
        "id": reservation.pk,
        "budget_id": reservation.budget_id,
        "budget": reservation.budget.name,
        "amount": _money(reservation.amount),
        "expires_at": reservation.expires_at.isoformat(),
        "status": reservation.status_at(),
        "actual": _money(reservation.actual),
    }


@api.post(
    "/budgets/reserve",
    response={201: dict, 403: dict, 409: dict, 422: dict, **COMMON},
    summary="Hold an estimate on the hard-limit budgets of some scopes, or be denied",
)
def budgets_reserve(request: HttpRequest, payload: ReserveIn) -> Any:
    for scope in payload.scopes:
        scope_allowed(request.auth, scope)  # type: ignore[attr-defined]
    ttl = timedelta(seconds=payload.ttl_seconds) if payload.ttl_seconds else None
    try:
        held = budget_reserve(scopes=payload.scopes, amount=payload.amount, ttl=ttl, service=request.auth.service)  # type: ignore[attr-defined]
    except BudgetExceeded as exc:
        if not request.auth.allows_scope(exc.budget.scope):  # type: ignore[attr-defined]
            raise ApiError(
                409,
                "budget_exceeded",
                f"a budget of scope {exc.budget.scope} that this API key may not read has no room for it",
                extra={
                    "budget": {"id": None, "name": None, "scope": exc.budget.scope},
                    "available": None,
                    "requested": _money(exc.requested),
                },
            ) from None
        raise ApiError(
            409,
            "budget_exceeded",
            str(exc),
            extra={
                "budget": {"id": exc.budget.pk, "name": exc.budget.name, "scope": exc.budget.scope},
                "available": _money(exc.available),
                "requested": _money(exc.requested),
            },
        ) from None
    except DjangoValidationError as exc:
        raise django_invalid(exc) from None
    return Status(201, {"reservations": [_reservation_json(r) for r in held]})


def _reservation_for(key: ApiKey, reservation_id: int) -> Reservation:
    reservation = Reservation.objects.select_related("budget").filter(pk=reservation_id).first()
    if reservation is None:
        raise ApiError(404, "not_found", f"no reservation #{reservation_id}")
    if reservation.service and reservation.service == key.service:
        return reservation  # its own hold, on whichever budgets the reserve applied (global ones too)
    scope_allowed(key, reservation.budget.scope)
    if reservation.service:
        # Releasing would free headroom on another service's hard limit; settling would close its hold.
        raise ApiError(
            403,
            "forbidden",
            f"reservation #{reservation_id} belongs to service {reservation.service!r}; "
            f"this API key is for {key.service!r}",
            errors={"reservation": ["forbidden"]},
        )
    return reservation


@api.post(
    "/reservations/{reservation_id}/settle",
    response={200: dict, 403: dict, 404: dict, 409: dict, 422: dict, **COMMON},
    summary="Settle a reservation with the real cost, or with the call's usage for the server to price",
)
def reservations_settle(request: HttpRequest, reservation_id: int, payload: SettleIn) -> Any:
    reservation = _reservation_for(request.auth, reservation_id)  # type: ignore[arg-type]
    try:
        reservation = reservation_settle(
            reservation=reservation,
            actual=payload.actual,
            usage=None if payload.usage is None else payload.usage.model_dump(exclude_none=True),
        )
    except DjangoValidationError as exc:
        errors = field_errors(exc)
        if "reservation" not in errors:  # the request's amount or usage: nothing was changed
            raise invalid(errors) from None
        raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
    return Status(200, _reservation_json(reservation))


@api.post(
    "/reservations/{reservation_id}/release",
    response={200: dict, 403: dict, 404: dict, 409: dict, **COMMON},
    summary="Release a reservation (the work did not happen)",
)
def reservations_release(request: HttpRequest, reservation_id: int) -> Any:
    reservation = _reservation_for(request.auth, reservation_id)  # type: ignore[arg-type]
    try:
        reservation = reservation_release(reservation=reservation)
    except DjangoValidationError as exc:
        errors = field_errors(exc)
        raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
    return Status(200, _reservation_json(reservation))


def _budget_json(status: BudgetStatus) -> dict[str, Any]:
    """A plain budget or a template's value as GET /budgets lists it: its status and forecast."""
    return {**_status_json(status), "forecast": _forecast_json(status), "template": False}


def _template_json(summary: TemplateSummary) -> dict[str, Any]:
    """A template as GET /budgets lists it: its settings and where its values stand, no status of its own."""
    return summary.as_json()


def _value_json(template: Budget, status: BudgetStatus) -> dict[str, Any]:
    return {
        **_budget_json(status),
        "value": template_value(template.scope, status.budget.scope),
        "override": status.budget.override,
    }


@api.get(
    "/budgets",
    response={200: dict, **COMMON},
    summary="Every active budget and template the key may see: a budget with its status, a template with its "
    "values' summary",
)
def budgets_list(request: HttpRequest) -> Any:
    only_query_params(request)
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    at = datetime.now(UTC)
    budgets = [b for b in Budget.objects.listed().filter(is_active=True).order_by("name") if key.allows_scope(b.scope)]
    statuses = {
        s.budget.pk: s for s in budget_statuses([b for b in budgets if not b.is_template], at=at, forecasts=True)
    }
    return Status(
        200,
        {
            "budgets": [
                _template_json(template_summary(b, at=at, top=0)) if b.is_template else _budget_json(statuses[b.pk])
                for b in budgets
            ]
        },
    )


def _template_for(key: ApiKey, budget_id: int) -> Budget:
    """A template the key may see; 404 for any other budget (one it may not see is not told apart)."""
    template = Budget.objects.listed().filter(pk=budget_id).select_related("team").first()
    if template is None or not key.allows_scope(template.scope):
        raise ApiError(404, "not_found", f"no budget #{budget_id}")
    if not template.is_template:
        raise ApiError(404, "not_found", f"budget #{budget_id} is not a template (its scope does not end in *)")
    return template


def _may_manage(key: ApiKey, budget: Budget | None = None) -> None:
    """Creating and changing budgets needs a key with "manage budgets"; a team's key changes its team's only."""
    if not key.can_manage_budgets:
        raise ApiError(
            403,
            "forbidden",
            'this API key may not manage budgets (an administrator ticks "manage budgets" on the key)',
            errors={"__all__": ["forbidden"]},
        )
    if budget is not None and key.team_id is not None and budget.team_id != key.team_id:
        raise ApiError(
            403,
            "forbidden",
            f"budget #{budget.pk} is not one of team {key.team.name}'s budgets",  # type: ignore[union-attr]
            errors={"__all__": ["forbidden"]},
        )


@api.get(
    "/budgets/{budget_id}/values",
    response={200: dict, 404: dict, **COMMON},
    summary="A template's values of highest utilisation (their value containing q), each with its status",
)
def budgets_values(
    request: HttpRequest,
    budget_id: int,
    q: str = Query("", max_length=200, description="only values containing this text (any case)"),
    limit: int = Query(20, ge=1, le=500),
) -> Any:
    only_query_params(request, "q", "limit")
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    template = _template_for(key, budget_id)
    summary = template_summary(template, at=datetime.now(UTC), search=q, top=limit)
    return Status(
        200,
        {
            "template": _template_json(summary),
            "values": [_value_json(template, s) for s in with_forecasts(summary.top)],
        },
    )


def _threshold_input(value: Any) -> Any:
    if isinstance(value, bool | str | float):
        raise ValueError("must be a JSON number (a percent of the limit, e.g. 80)")
    return value


# A percent of the limit; its range and order are the model's to check (budgets.models.threshold_errors).
ThresholdIn = Annotated[
    Decimal, BeforeValidator(_threshold_input), Field(allow_inf_nan=False), WithJsonSchema({"type": "number"})
]


def _model_default(field: str) -> Any:
    return Budget._meta.get_field(field).get_default()


class BudgetIn(Schema):
    """A budget, or a template when its scope ends in * (subject:*, tag:customer=*, team:ml/job:*):
    each value then gets a budget of its own, with these settings, on first use."""

    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=200, pattern=r"\S", examples=["Per user"])
    scope: Text = Field(
        min_length=1,
        max_length=320,
        examples=["subject:*"],
        description="global, provider:X, service:X, model:X, subject:X, job:X, tag:KEY=VALUE, team:NAME(/...); "
        "ending in * a template: subject:*, job:*, tag:customer=*, team:NAME/subject:*, team:*",
    )
    amount: MoneyIn = Field(description="what may be spent per period (by each value, for a template)")
    currency: Text = Field(default=_model_default("currency"), min_length=3, max_length=3)
    period: Text = Field(default=_model_default("period"), json_schema_extra={"enum": list(Period.values)})
    thresholds: list[ThresholdIn] = Field(
        default_factory=lambda: [Decimal(t) for t in default_thresholds()],
        max_length=20,
        description="percents of the limit, lowest first",
    )
    rollover: StrictBool = _model_default("rollover")
    rollover_cap: MoneyIn | None = None
    hard_limit: StrictBool = _model_default("hard_limit")
    forecast_alerts: StrictBool = _model_default("forecast_alerts")
    count_billed: StrictBool = Field(
        default=False,
        description="count the providers' imported bills instead of the metered spend for closed UTC days "
        "(global or provider:NAME budgets without a team only)",
    )
    confirm_scope: StrictBool = Field(
        default=False,
        description="a template whose kind never had spend (a typo in a tag key?) is refused unless this is true",
    )


def _threshold(value: Decimal) -> int | float:
    """A percent as the JSON column keeps it (the admin's form writes the same)."""
    if abs(value) < 10**6 and value == value.to_integral_value():
        return int(value)
    return float(value)  # a fraction; a huge one becomes inf and threshold_errors refuses it


@api.post(
    "/budgets",
    response={201: dict, 403: dict, 422: dict, **COMMON},
    summary="Create a budget, or a template (scope ending in *); needs a key that may manage budgets",
)
def budgets_create(request: HttpRequest, payload: BudgetIn) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    scope_allowed(key, payload.scope)
    fields = payload.model_dump()
    confirmed = fields.pop("confirm_scope")
    fields["thresholds"] = [_threshold(t) for t in payload.thresholds]
    errors: dict[str, list[str]] = {}
    for field in ("amount", "rollover_cap"):  # the places and range a money column holds
        if fields[field] is not None:
            try:
                fields[field] = parse_money(fields[field], field=field)
            except DjangoValidationError as exc:
                errors.update(field_errors(exc))
    budget = Budget(**fields, team=key.team)  # a team's key creates its team's budgets
    try:
        budget.full_clean(exclude=list(errors))
    except DjangoValidationError as exc:
        for field, messages in field_errors(exc).items():
            errors.setdefault(field, []).extend(messages)
    if budget.is_template and "scope" not in errors and not confirmed and not template_has_values(budget.scope):
        errors["scope"] = [
            f"no spend has ever been recorded for a value of {budget.scope}: check the spelling (the tag key?), "
            "or send confirm_scope: true to create it all the same"
        ]
    if errors:
        raise invalid(errors)
    budget.save()
    if budget.is_template:
        return Status(201, _template_json(template_summary(budget, top=0)))
    return Status(201, _budget_json(budget_statuses([budget], forecasts=True)[0]))


def _value_param(value: str) -> str:
    """A template's value from the path, as a text column can hold it."""
    try:
        return no_nul(value)
    except ValueError as exc:
        raise invalid({"value": [str(exc)]}) from None


class OverrideIn(Schema):
    model_config = ConfigDict(extra="forbid")
    amount: MoneyIn = Field(description="the value's own amount per period, instead of the template's")


@api.put(
    "/budgets/{budget_id}/values/{value}",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="Give one value of a template an amount of its own (its budget is created if it has none)",
)
def budgets_value_override(request: HttpRequest, budget_id: int, value: str, payload: OverrideIn) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    template = _template_for(key, budget_id)
    _may_manage(key, template)
    try:
        budget = budget_override_set(template=template, value=_value_param(value), amount=payload.amount)
    except DjangoValidationError as exc:
        raise django_invalid(exc) from None
    return Status(200, _value_json(template, budget_statuses([budget], forecasts=True)[0]))


@api.delete(
    "/budgets/{budget_id}/values/{value}",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="A value follows its template's amount again",
)
def budgets_value_follow(request: HttpRequest, budget_id: int, value: str) -> Any:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    _may_manage(key)
    template = _template_for(key, budget_id)
    _may_manage(key, template)
    scope = template_prefix(template.scope) + _value_param(value)
    budget = Budget.objects.filter(template=template, scope=scope).first()
    if budget is None:
        raise ApiError(404, "not_found", f"template #{template.pk} has no budget for value {value!r}")
    budget = budget_override_clear(budget=budget)
    return Status(200, _value_json(template, budget_statuses([budget], forecasts=True)[0]))
