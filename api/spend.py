"""The calling key, its service's spend (from rollups) and its batches (cost per lead)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest
from ninja import Query, Schema, Status
from pydantic import (
    ConfigDict,
    Field,
)

from core.money import plain_money as _money

from .api import (
    COMMON,
    SCOPE_PATTERN,
    ApiError,
    Text,
    api,
    django_invalid,
    field_errors,
    invalid,
    json_int,
    only_query_params,
    scope_allowed,
)
from .models import ApiKey
from .selectors import GROUP_BY, spend_grouped


@api.get(
    "/key",
    response={200: dict, **COMMON},
    summary="The calling API key: its service, team, scopes, whether it may manage budgets, and its limits",
)
def key_show(request: HttpRequest) -> Any:
    """Any key reads itself (never its secret): a client learns the service its events must name."""
    only_query_params(request)
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return Status(
        200,
        {
            "name": key.name,
            "prefix": key.prefix,
            "service": key.service,
            "team": key.team.name if key.team else None,
            "scopes": list(key.scopes),
            "can_manage_budgets": key.can_manage_budgets,
            "rate_limit_per_minute": key.rate_limit_per_minute or settings.API_RATE_LIMIT_PER_MINUTE or None,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    )


# --- spend -------------------------------------------------------------------------------------


class SpendQuery(Schema):
    scope: Text = Field(default="global", min_length=1, max_length=320, pattern=SCOPE_PATTERN)
    start: datetime = Field(alias="from", description="ISO 8601 with offset")
    end: datetime = Field(alias="to", description="ISO 8601 with offset")
    group_by: Literal["provider", "model", "service", "subject", "day", "hour"] | None = None
    currency: Text = Field(default="USD", min_length=3, max_length=3)


@api.get(
    "/spend", response={200: dict, 403: dict, 422: dict, **COMMON}, summary="Spend of a scope in a window, from rollups"
)
def spend(request: HttpRequest, query: Query[SpendQuery]) -> Any:
    only_query_params(request, "scope", "from", "to", "group_by", "currency")
    scope_allowed(request.auth, query.scope)  # type: ignore[attr-defined]
    try:
        answer = spend_grouped(
            scope=query.scope, start=query.start, end=query.end, group_by=query.group_by, currency=query.currency
        )
    except DjangoValidationError as exc:
        raise django_invalid(exc) from None
    return Status(
        200,
        {
            "scope": query.scope,
            "from": query.start.isoformat(),
            "to": query.end.isoformat(),
            "currency": query.currency,
            "total": _money(answer.total),
            "group_by": query.group_by,
            "groups": [{"key": g.key, "amount": _money(g.amount), "events": g.events} for g in answer.groups],
        },
    )


# --- batches -----------------------------------------------------------------------------------


class BatchStartIn(Schema):
    model_config = ConfigDict(extra="forbid")
    # tracking.batches refuses spaces inside a name or job (a pattern cannot say it portably: the regex
    # engines of pydantic, Python and JSON Schema validators disagree on what a space is).
    name: Text = Field(min_length=1, max_length=200, description="the pipeline, e.g. nightly-leads")
    job: Text | None = Field(default=None, max_length=200, description="default: <name>-<UTC start time>")
    note: Text = Field(default="", max_length=500)


class BatchFinishIn(Schema):
    model_config = ConfigDict(extra="forbid")
    leads: json_int(ge=0, lt=2**63) = Field(description="how many leads the batch produced")


def _batch_owned(key: ApiKey, batch: Any) -> None:
    """A pipeline belongs to the service whose key started its last batch; one started in process or
    from the command line, to keys that may read every scope."""
    if batch.service == key.service:
        return
    if not batch.service:
        scope_allowed(key, "global")
        return
    raise ApiError(
        403,
        "forbidden",
        f"batch {batch.name!r} belongs to service {batch.service!r}; this API key is for {key.service!r}",
        errors={"name": ["forbidden"]},
    )


def _batch_json(batch: Any, key: ApiKey) -> dict[str, Any]:
    # Month-to-date cost per lead is every service's spend: shown to keys that may read scope global.
    month = key.allows_scope("global")
    return {
        "id": batch.pk,
        "name": batch.name,
        "job": batch.job,
        "service": batch.service,
        "started_at": batch.started_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "leads": batch.leads,
        "cost": _money(batch.cost),
        "cost_per_lead": _money(batch.cost_per_lead),
        "month_cost_per_lead": _money(batch.month_cost_per_lead) if month else None,
        "currency": "USD",
    }


@api.post(
    "/batches",
    response={201: dict, 403: dict, 409: dict, 422: dict, **COMMON},
    summary="Open a batch; record its usage with its job",
)
def batches_start(request: HttpRequest, payload: BatchStartIn) -> Any:
    from tracking.batches import batch_latest, batch_start

    key: ApiKey = request.auth  # type: ignore[attr-defined]
    if (latest := batch_latest(name=payload.name.strip())) is not None:
        _batch_owned(key, latest)
    try:
        batch = batch_start(name=payload.name, job=payload.job, note=payload.note, service=key.service)
    except DjangoValidationError as exc:
        errors = field_errors(exc)
        # A batch of that name still running, or the job id taken: the request is fine, the state conflicts.
        if any("already" in message for messages in errors.values() for message in messages):
            raise ApiError(409, "conflict", next(iter(errors.values()))[0], errors=errors) from None
        raise invalid(errors) from None
    return Status(201, _batch_json(batch, key))


@api.post(
    "/batches/{name}/finish",
    response={200: dict, 403: dict, 404: dict, 422: dict, **COMMON},
    summary="Close the running batch of a pipeline with its lead count; answers its cost per lead",
)
def batches_finish(request: HttpRequest, name: str, payload: BatchFinishIn) -> Any:
    from tracking.batches import batch_cost_compute, batch_finish, batch_running

    key: ApiKey = request.auth  # type: ignore[attr-defined]
    try:
        running = batch_running(name=name)
    except DjangoValidationError as exc:
        raise ApiError(404, "not_found", field_errors(exc)["name"][0]) from None
    _batch_owned(key, running)
    try:
        batch = batch_cost_compute(batch=batch_finish(batch=running, leads=payload.leads))
    except DjangoValidationError as exc:
        raise django_invalid(exc) from None
    return Status(200, _batch_json(batch, key))


@api.get("/batches", response={200: dict, **COMMON}, summary="The last batches with cost and cost per lead")
def batches_list(request: HttpRequest, limit: int = Query(20, ge=1, le=500)) -> Any:
    from tracking.models import Batch

    only_query_params(request, "limit")
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    batches = Batch.objects.order_by("-started_at")
    if key.scopes or key.team_id is not None:  # a restricted or a team's key sees its service's batches
        batches = batches.filter(service=key.service)
    return Status(200, {"batches": [_batch_json(b, key) for b in batches[:limit]]})


__all__ = ["GROUP_BY", "api"]
