"""Analytics keeps no data of its own: trends, anomalies and recommendations are read from the
rollups (tracking) and the price catalog every time they are asked for.

The one model here has no table. It gives the admin dashboard a place in the admin index
("Analytics > Cost dashboard") and a permission, ``analytics.view_dashboard``, that a staff user
needs to open it (superusers have it).
"""

from __future__ import annotations

from django.db import models


class Dashboard(models.Model):
    class Meta:
        managed = False  # no table: the admin entry and its view permission only
        default_permissions = ("view",)
        verbose_name = "cost dashboard"
        verbose_name_plural = "cost dashboard"

    def __str__(self) -> str:
        return "cost dashboard"
