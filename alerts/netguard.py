"""The SSRF guard of channel targets: a channel may not make this server connect to its own
network (private, loopback, link-local such as the cloud metadata service 169.254.169.254,
multicast, reserved, unspecified, shared/CGNAT; IPv4 and IPv6, IPv4-mapped IPv6 included),
unless the address lies in settings.CHANNEL_ALLOWED_NETWORKS.

Checked twice:
- when a channel is saved (Channel.clean): the hosts its URL names, resolved now (numeric spellings
  such as 2130706433, 0x7f000001 or 127.1 resolve as the connection would resolve them);
- at every delivery, where the connection is made, because DNS changes, HTTP redirects, and a
  service library may pick its own server. Inside `guarded_connections()` every socket operation
  that names a peer (connect, connect_ex, sendto, sendmsg: TCP and UDP, whatever library makes
  it: urllib3, smtplib, a syslog datagram) is checked against the address it actually goes to;
  a host name given to the socket is resolved once and the checked address is the one used.
  Sockets other than IP ones (Unix sockets) are refused there outright.

The operator's own mail server (EMAIL_HOST, used by email channels through Django's mail backend)
is configuration, not a channel target: email is sent outside the guard.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(OSError):
    """A connection this guard refused. An OSError, so network libraries report it as a failed
    connection; `guarded_connections()` keeps it so the caller can tell it from a real one."""

    def __init__(self, host: str, address: IPAddress | None, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        a = "an" if reason[:1].lower() in "aeiou" else "a"
        if address is None:  # not an IP socket at all
            text = f"{host}, {a} {reason}: refused (channels connect to IP addresses only)"
        else:
            shown = host if _literal(host) == address else f"{host} resolves to {address}"
            text = f"{shown}, {a} {reason} address: refused (an address inside CHANNEL_ALLOWED_NETWORKS is allowed)"
        super().__init__(text)

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
    """The address `host` writes out in canonical form (no lookup), or None (a name, or a numeric
    spelling such as 127.1 that only the resolver reads)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _lookup(host: str, port: int | None, family: int, kind: int) -> list[tuple[IPAddress, tuple[Any, ...]]]:
    """(address, sockaddr) for every answer of socket.getaddrinfo, which reads numeric spellings as
    the connection would (inet_aton: 2130706433, 0x7f000001, 127.1); raises socket.gaierror."""
    infos = socket.getaddrinfo(host, port, family, kind)
    return [(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), sockaddr) for *_, sockaddr in infos]


def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """Every address `host` resolves to (raises socket.gaierror)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    return [address for address, _ in _lookup(host, port, 0, socket.SOCK_STREAM)]


def check_host(host: str, port: int | None = None, *, unresolvable_ok: bool = True) -> None:
    """Raise BlockedAddress if `host` is, or resolves to, an address a channel may not reach.

    A name that does not resolve passes when `unresolvable_ok` (there is nothing to connect to;
    the delivery checks again where it connects); otherwise the socket.gaierror is raised."""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError):
        if unresolvable_ok:
            return
        raise
    for address in addresses:
        if reason := address_problem(address):
            raise BlockedAddress(host, address, reason)


# --- the delivery-time guard, at the socket -----------------------------------------------------------


@dataclass
class Guard:
    blocked: list[BlockedAddress] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("costcontrol_netguard", default=None)
_install_lock = threading.Lock()
_installed = False


def _checked_peer(sock: socket.socket, address: Any) -> Any:
    """The peer address to hand to the real socket call (see _peer); outside a guarded block,
    `address` untouched."""
    guard = _ACTIVE.get()
    if guard is None:
        return address
    try:
        return _peer(sock, address)
    except BlockedAddress as error:
        guard.blocked.append(error)
        raise


def _peer(sock: socket.socket, address: Any) -> Any:
    """`address` when it is an IP address that may be reached, or the checked numeric address a
    host name resolves to (one lookup: the address checked is the address used)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise BlockedAddress(str(address), None, f"{socket.AddressFamily(sock.family).name} socket")
    host = address[0].decode("idna") if isinstance(address[0], bytes) else str(address[0])
    literal = _literal(host)
    if literal is not None:
        resolved = [(literal, address)]  # as given: keeps an IPv6 address's flow info and scope
    else:
        resolved = _lookup(host, address[1], sock.family, sock.type)  # gaierror: as the socket would
    for candidate, _ in resolved:
        if reason := address_problem(candidate):
            raise BlockedAddress(host, candidate, reason)
    return resolved[0][1]


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: Any) -> Any:
        return original(self, _checked_peer(self, address))

    return connect


def _wrap_sendto(original: Callable[..., Any]) -> Callable[..., Any]:
    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:  # (data, address) or (data, flags, address)
        if args:
            args = (*args[:-1], _checked_peer(self, args[-1]))
        return original(self, data, *args)

    return sendto


def _wrap_sendmsg(original: Callable[..., Any]) -> Callable[..., Any]:
    def sendmsg(self: socket.socket, *args: Any) -> Any:  # (buffers, ancdata, flags, address)
        if len(args) >= 4 and args[3] is not None:
            args = (*args[:3], _checked_peer(self, args[3]), *args[4:])
        return original(self, *args)

    return sendmsg


def _install() -> None:
    """Wrap the socket methods that name a peer, once per process; they check only inside
    guarded_connections() and otherwise pass straight through."""
    global _installed
    with _install_lock:
        if _installed:
            return
        for name, wrap in (
            ("connect", _wrap_connect),
            ("connect_ex", _wrap_connect),
            ("sendto", _wrap_sendto),
            ("sendmsg", _wrap_sendmsg),
        ):
            setattr(socket.socket, name, wrap(getattr(socket.socket, name)))
        _installed = True


@contextmanager
def guarded_connections() -> Iterator[Guard]:
    """Inside this block (and in threads run with a copy of its context, as apprise's are), every
    connection or datagram to a blocked address is refused (BlockedAddress) and recorded on the Guard."""
    _install()
    guard = Guard()
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
