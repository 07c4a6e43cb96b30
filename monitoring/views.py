"""GET /metrics: the Prometheus exposition, optionally behind a bearer token and an IP allow-list."""

from __future__ import annotations

import hmac
import ipaddress
import os
from functools import cache

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import multiprocess

from .metrics import COLLECTOR

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks() -> tuple[Network, ...]:
    """METRICS_ALLOWED_IPS parsed: addresses (a /32 or /128) and networks. Raises ValueError naming a bad one."""
    return _networks(tuple(settings.METRICS_ALLOWED_IPS))


@cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """Each protection that is set must pass: the peer's address (REMOTE_ADDR: the proxy's, behind one;
    X-Forwarded-For is not trusted) and the bearer token."""
    networks = allowed_networks()
    if networks:
        try:
            peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            peer = None
        if peer is None or not any(peer in network for network in networks):
            return HttpResponse(
                "forbidden: this address may not read /metrics\n", status=403, content_type="text/plain"
            )
    token = settings.METRICS_BEARER_TOKEN
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = HttpResponse("unauthorized: a bearer token is required\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # gunicorn with several workers: every worker's framework metrics, merged from the shared
        # directory, plus the business metrics (the same from any worker: they come from the database).
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(COLLECTOR)
    else:
        registry = prometheus_client.REGISTRY
    return HttpResponse(prometheus_client.generate_latest(registry), content_type=prometheus_client.CONTENT_TYPE_LATEST)
