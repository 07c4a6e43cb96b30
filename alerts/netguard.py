"""The SSRF guard of channel targets: a channel may not make this server connect to its own
network (private, loopback, link-local such as the cloud metadata service 169.254.169.254,
multicast, reserved, unspecified, shared/CGNAT; IPv4 and IPv6, IPv4-mapped IPv6 included),
unless the address lies in settings.CHANNEL_ALLOWED_NETWORKS.

Checked twice: when a channel is saved (Channel.clean, the host of its URL resolved now) and at
every delivery, because DNS can change. At delivery the check sits where the connection is made:
inside `guarded_connections()` every connection urllib3 opens (requests, and apprise through it,
redirects included) resolves its host once, refuses if any address is blocked, and connects to
the checked address itself, so a name cannot resolve to one address for the check and another
for the connection.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(OSError):
    """A connection this guard refused. An OSError, so HTTP libraries report it as a failed
    connection; `guarded_connections()` keeps it so the caller can tell it from a real one."""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        shown = host if _literal(host) is not None else f"{host} resolves to {address}"
        super().__init__(
            f"{shown}, a {reason} address: refused (an address inside CHANNEL_ALLOWED_NETWORKS is allowed)"
        )

    def __str__(self) -> str:
        return str(self.args[0])


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def allowed_networks() -> tuple[IPNetwork, ...]:
    return _networks(tuple(getattr(settings, "CHANNEL_ALLOWED_NETWORKS", ()) or ()))


def address_problem(address: IPAddress) -> str | None:
    """Why this address may not be connected to ("private", "loopback", ...), or None."""
    if any(address in network for network in allowed_networks()):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:10.0.0.5 reaches 10.0.0.5; so do 6to4 2002:0a00:0005:: and NAT64 64:ff9b::10.0.0.5.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in ipaddress.ip_network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return reason
    if not address.is_global:
        return "non-public"  # e.g. the shared (CGNAT) range 100.64.0.0/10
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def resolve_is_literal(host: str) -> bool:
    """Whether `host` is an IP address written out (no lookup needed)."""
    return _literal(host) is not None


def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """Every address `host` resolves to (socket.getaddrinfo; raises socket.gaierror)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]) for *_, sockaddr in infos]


def check_host(host: str, port: int | None = None, *, unresolvable_ok: bool = True) -> None:
    """Raise BlockedAddress if `host` is, or resolves to, an address a channel may not reach.

    A name that does not resolve passes when `unresolvable_ok` (there is nothing to connect to;
    the delivery checks again); otherwise the socket.gaierror is raised."""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError):
        if unresolvable_ok:
            return
        raise
    for address in addresses:
        if reason := address_problem(address):
            raise BlockedAddress(host, address, reason)


# --- the delivery-time guard, where urllib3 connects -----------------------------------------------


@dataclass
class Guard:
    blocked: list[BlockedAddress] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("costcontrol_netguard", default=None)
_install_lock = threading.Lock()
_installed = False


def _guarded_create_connection(original: Any) -> Any:
    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        guard = _ACTIVE.get()
        if guard is None:
            return original(address, *args, **kwargs)
        host, port = address
        host = host.strip("[]")
        addresses = list(dict.fromkeys(resolve(host, port)))  # gaierror: urllib3 reports it as usual
        for candidate in addresses:
            if reason := address_problem(candidate):
                error = BlockedAddress(host, candidate, reason)
                guard.blocked.append(error)
                raise error
        # Connect to the addresses just checked (no second lookup that could answer differently).
        last: OSError | None = None
        for candidate in addresses:
            try:
                return original((str(candidate), port), *args, **kwargs)
            except OSError as exc:
                last = exc
        raise last or OSError(f"{host} resolves to no address")

    create_connection.costcontrol_guarded = True  # type: ignore[attr-defined]
    return create_connection


def _install() -> None:
    """Wrap urllib3's create_connection once per process; it only checks inside guarded_connections()."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from urllib3.util import connection

        if not getattr(connection.create_connection, "costcontrol_guarded", False):
            connection.create_connection = _guarded_create_connection(connection.create_connection)
        _installed = True


@contextmanager
def guarded_connections() -> Iterator[Guard]:
    """Inside this block (and in threads started with a copy of its context, as apprise does),
    every urllib3 connection to a blocked address is refused and recorded on the Guard."""
    _install()
    guard = Guard()
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
