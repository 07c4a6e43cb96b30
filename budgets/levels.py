"""Budget levels: what a share of the limit is called, and the words every screen, message and metric
uses for a level and for a forecast. The one place that names them.

A level comes from a value, never from a threshold's position in a budget's list: below 80 % of the
limit is info, 80 % up to 95 % warning, 95 % up to 100 % critical, 100 % and above exceeded. A budget's
thresholds say at which percents it speaks up; the highest threshold reached names the level with the
level of its own value (a budget with thresholds 80, 100 is at "warning" from 80 %). A forecast that
crosses the limit is its own kind, "forecast to exceed on <date>", never "exceeded".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models


class Level(models.TextChoices):
    """Levels, lowest first."""

    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"
    EXCEEDED = "exceeded", "exceeded"


LEVEL_ORDER: tuple[str, ...] = tuple(Level.values)
# The lowest percent of the limit at which each level starts (info: anything below warning).
LEVEL_FLOORS: tuple[tuple[Decimal, str], ...] = (
    (Decimal(100), Level.EXCEEDED),
    (Decimal(95), Level.CRITICAL),
    (Decimal(80), Level.WARNING),
)
OK = "ok"  # below every threshold: no level
FORECAST = "forecast to exceed"  # a forecast crossing the limit: its own kind, never a level
FORECAST_COLOUR = "#7048e8"
LEVEL_COLOURS: dict[str | None, str] = {
    None: "#2b8a3e",  # ok
    Level.INFO: "#1c7ed6",
    Level.WARNING: "#e67700",
    Level.CRITICAL: "#d9480f",
    Level.EXCEEDED: "#c92a2a",
}


def level_rank(level: str | None) -> int:
    """0 for no level, 1 for info ... 4 for exceeded (for comparisons and 'peak' bookkeeping)."""
    return 0 if not level else LEVEL_ORDER.index(level) + 1


def percent_level(percent: Decimal) -> str:
    """The level a percent of the limit is at, by value."""
    for floor, level in LEVEL_FLOORS:
        if percent >= floor:
            return level
    return Level.INFO


def budget_level(utilisation: Decimal | None, thresholds: Iterable[object], *, over: bool = False) -> str | None:
    """The level of the highest of `thresholds` (percents) that `utilisation` reached, named by that
    threshold's value; None below every threshold. A zero limit has no utilisation: any spend
    (`over`) is exceeded."""
    if utilisation is None:
        return Level.EXCEEDED if over else None
    reached = [value for value in (Decimal(str(t)) for t in thresholds) if utilisation >= value]
    return percent_level(max(reached)) if reached else None


def level_label(level: str | None) -> str:
    """The word for a level: "ok" below every threshold, else the level's own name."""
    return OK if not level else Level(level).label


def forecast_label(exceed_at: datetime) -> str:
    """ "forecast to exceed on 28 Dec" (the local day the forecast crosses the limit)."""
    local = exceed_at.astimezone(ZoneInfo(settings.TIME_ZONE))
    return f"{FORECAST} on {local:%-d %b}"
