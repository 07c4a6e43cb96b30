"""Scopes: what a rollup row, a budget, a rule or an API key counts or may read.

`global`, `KIND:VALUE` (provider, service, model, operation, subject, job, team) and `tag:KEY=VALUE`.
An entry that belongs to a team also counts towards `team:NAME` and towards its team's copy of
each of its other scopes, `team:NAME/KIND:VALUE` ("team alpha's spend on gpt-4o"). So a team's
spend in any dimension is read from rollups of its own, and "team alpha's scopes" are simply the
scopes whose team is alpha (`scope_team`): what a team's budgets, rules, keys and staff may see.
Team names hold no "/" (core.models.Team), so the first "/" ends the team's name.

An entry of a service (a name without "/") that has a subject or a job also counts towards
`service:NAME/subject:X` and `service:NAME/job:X` ("the end users of service search", "the jobs of
service pipeline"): a service's own copy of those two kinds, what a template narrowed to a service
reads (`service:pipeline/job:*`). A list of "every service" leaves them out (SERVICE_NARROWED).
"""

from __future__ import annotations

from typing import Any

SCOPE_KINDS = ("global", "provider", "service", "model", "subject", "job", "tag", "team")
TEAM_SEPARATOR = "/"
# The kinds a service has a copy of: service:NAME/subject:X, service:NAME/job:X.
SERVICE_NARROWED = ("subject", "job")


def service_narrowed(scope: str) -> tuple[str, str] | None:
    """(service, inner) of `service:NAME/subject:X` or `service:NAME/job:X` (without a team), else None."""
    if not scope.startswith("service:"):
        return None
    name, sep, inner = scope[len("service:") :].partition("/")
    if not sep or not name or not inner.startswith(tuple(f"{kind}:" for kind in SERVICE_NARROWED)):
        return None
    return name, inner


def service_scope(service: str, scope: str) -> str:
    """Service `service`'s copy of a subject or job scope: `service:NAME/job:X`."""
    return f"service:{service}/{scope}"


def team_scope(team_name: str, scope: str = "global") -> str:
    """Team `team_name`'s copy of `scope`: `team:NAME` for global, else `team:NAME/SCOPE`."""
    return f"team:{team_name}" if scope == "global" else f"team:{team_name}{TEAM_SEPARATOR}{scope}"


def scope_team(scope: str) -> str | None:
    """The team whose spend `scope` counts (`team:alpha` and `team:alpha/model:x`: "alpha"), else None."""
    if not scope.startswith("team:"):
        return None
    return scope[len("team:") :].partition(TEAM_SEPARATOR)[0]


def scope_inner(scope: str) -> str:
    """`scope` without its team: `team:alpha/model:x` gives `model:x`, `team:alpha` gives `global`."""
    if not scope.startswith("team:"):
        return scope
    _, sep, inner = scope[len("team:") :].partition(TEAM_SEPARATOR)
    return inner if sep else "global"


def enclosing_scopes(scope: str) -> set[str]:
    """The scopes whose budgets hold spend of `scope`: itself, global, and its team's whole spend."""
    team = scope_team(scope)
    return {scope, "global"} | (set() if team is None else {team_scope(team)})


def scope_errors(scope: Any) -> list[str]:
    """What is wrong with a scope string (empty list: it is valid). Same grammar as the rollup scopes."""
    if not isinstance(scope, str) or not scope:
        return ["a scope is required, e.g. global, provider:openai or tag:team=ml"]
    if scope == "global":
        return []
    kind, sep, value = scope.partition(":")
    if not sep:
        if kind in SCOPE_KINDS:
            return [f"scope {scope!r} needs a value after the colon, e.g. {kind}:NAME"]
        return [f"unknown scope kind {kind!r} (expected one of {', '.join(SCOPE_KINDS)})"]
    if kind not in SCOPE_KINDS:
        return [f"unknown scope kind {kind!r} (expected one of {', '.join(SCOPE_KINDS)})"]
    if kind == "global":
        return ["the global scope has no value: write just 'global'"]
    if not value.strip() or value != value.strip():
        return [f"scope {scope!r} needs a value without surrounding spaces after the colon"]
    if kind == "team":
        name, sep, inner = value.partition(TEAM_SEPARATOR)
        if not sep:
            return []
        if not name.strip() or name != name.strip():
            return [f"scope {scope!r} needs a team name before the '/', e.g. team:ml/service:NAME"]
        if inner == "global" or inner.startswith("team:"):
            return [f"scope {scope!r}: after team:{name}/ comes a provider, service, model, subject, job or tag scope"]
        return [f"{scope}: {problem}" for problem in scope_errors(inner)]
    if kind == "tag":
        key, eq, tag_value = value.partition("=")
        if not eq or not key or not tag_value:
            return [f"tag scope {scope!r} must be tag:KEY=VALUE, e.g. tag:team=ml"]
    if (narrowed := service_narrowed(scope)) is not None:
        name, inner = narrowed
        if name != name.strip():
            return [f"scope {scope!r} needs a service name without surrounding spaces before the '/'"]
        return [f"{scope}: {problem}" for problem in scope_errors(inner)]
    return []


def team_scope_errors(scope: str, team_name: str | None) -> list[str]:
    """What keeps an object of team `team_name` (None: organisation-wide) from watching `scope`:
    a team's budgets, rules and keys see only their team's spend."""
    if team_name is None or scope_team(scope) == team_name:
        return []
    suggestion = team_scope(team_name, scope_inner(scope)) if scope_team(scope) is None else team_scope(team_name)
    return [f"team {team_name} may only watch its own spend: {scope!r} is not one of its scopes (try {suggestion!r})"]


# --- templates: one budget for each value of a kind -----------------------------------------------

ANY_VALUE = "*"
# The kinds a template may cover: each provider, service, model, subject (end user), job, team, or
# each value of one tag key (`tag:customer=*`).
TEMPLATE_KINDS = ("provider", "service", "model", "subject", "job", "team", "tag")


def scope_is_template(scope: str) -> bool:
    """Whether `scope` names each value of a kind (`subject:*`, `tag:customer=*`, `team:T/job:*`,
    `team:*`) rather than one scope."""
    return scope.endswith((":" + ANY_VALUE, "=" + ANY_VALUE))


def template_scope_errors(scope: Any) -> list[str]:
    """What is wrong with a template's scope: KIND:* for a kind in TEMPLATE_KINDS, tag:KEY=* for each
    value of a tag key, either narrowed to a team's spend (team:T/subject:*), the subjects or jobs of a
    service narrowed to it (service:S/job:*, team:T/service:S/subject:*), or team:* (each team)."""
    if not isinstance(scope, str) or not scope_is_template(scope):
        return ["a template's scope ends in * (each value), e.g. subject:*, job:*, tag:customer=* or team:ml/subject:*"]
    if scope == f"team:{ANY_VALUE}":
        return []
    inner, team = scope_inner(scope), scope_team(scope)
    if team is not None and (not team or team == ANY_VALUE or inner.startswith("team:")):
        return [f"scope {scope!r}: narrow a template to one team, e.g. team:ml/subject:*"]
    if (narrowed := service_narrowed(inner)) is not None:
        if narrowed[0] != narrowed[0].strip():
            return [f"scope {scope!r} needs a service name without surrounding spaces before the '/'"]
        inner = narrowed[1]  # service:pipeline/job:* covers each job of service pipeline
    elif inner.startswith("service:") and "/" in inner:
        return [f"scope {scope!r}: a service narrows only subjects or jobs, e.g. service:NAME/job:*"]
    kind, _, value = inner.partition(":")
    if kind not in TEMPLATE_KINDS or kind == "team":
        return [f"a template covers each value of one of {', '.join(TEMPLATE_KINDS)}; {kind!r} is none of them"]
    if kind == "tag":
        key = value[: -len("=" + ANY_VALUE)]
        if not value.endswith("=" + ANY_VALUE) or not key or "=" in key or ANY_VALUE in key:
            return [f"scope {scope!r}: each value of a tag key is written tag:KEY=*, e.g. tag:customer=*"]
    elif value != ANY_VALUE:
        return [f"scope {scope!r}: each value of {kind} is written {kind}:*"]
    return []


def template_scopes(scope: str) -> set[str]:
    """The template scopes that cover `scope`: `subject:alice` is a value of `subject:*`,
    `team:ml/subject:alice` of `team:ml/subject:*`, `tag:customer=acme` of `tag:customer=*`, `team:ml`
    of `team:*`, `service:etl/job:j1` of `service:etl/job:*`. Empty for global and for scopes no
    template covers."""
    if scope == "global" or scope_is_template(scope):
        return set()
    team, inner = scope_team(scope), scope_inner(scope)
    if inner == "global":
        return {f"team:{ANY_VALUE}"}
    narrowed = service_narrowed(inner)
    kind, _, value = (inner if narrowed is None else narrowed[1]).partition(":")
    if kind not in TEMPLATE_KINDS:
        return set()
    pattern = f"tag:{value.partition('=')[0]}={ANY_VALUE}" if kind == "tag" else f"{kind}:{ANY_VALUE}"
    if narrowed is not None:
        pattern = service_scope(narrowed[0], pattern)
    return {pattern if team is None else team_scope(team, pattern)}


def template_prefix(template: str) -> str:
    """The common start of every scope a template covers (`subject:*` gives `subject:`): what a
    LIKE on the rollups' scopes looks for."""
    return template[: -len(ANY_VALUE)]


def template_value(template: str, scope: str) -> str:
    """The value `scope` is of `template` (`subject:*`, `subject:alice` gives `alice`)."""
    return scope[len(template_prefix(template)) :]


def billed_scope(scope: str) -> bool:
    """Whether the providers' bills can answer for `scope`: the whole spend or one provider's, organisation-wide
    (bills are per provider and day, not per service, user or team)."""
    return scope == "global" or (scope.startswith("provider:") and "/" not in scope and len(scope) > len("provider:"))
