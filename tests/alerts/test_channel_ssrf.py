"""Channels cannot reach the inside, whatever the protocol: apprise's mail (SMTP) and remote syslog
(UDP) as much as its HTTP services; numeric and dotless host spellings as much as dotted ones;
schemes nobody tried here not at all. CHANNEL_ALLOWED_NETWORKS is the only way in.

Real servers on 127.0.0.1 (an SMTP server, a UDP socket, an HTTP receiver): a guard that failed
would deliver to them. DNS is mocked only where a test needs a name (socket.getaddrinfo).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from alerts import netguard
from alerts.delivery import channel_test_send, notification_deliver
from alerts.models import Channel, Notification, NotificationStatus
from tests.alerts.servers import smtp_server, webhook_receiver
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

INSIDE = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names this test resolves (name -> addresses); other names go to the real resolver."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in table:
            return real(host, port, *args, **kwargs)
        kind = (args[1] if len(args) > 1 else kwargs.get("type", 0)) or socket.SOCK_STREAM
        result = []
        for address in table[name]:
            v6 = ipaddress.ip_address(address).version == 6
            sockaddr = (address, int(port or 0), 0, 0) if v6 else (address, int(port or 0))
            result.append((socket.AF_INET6 if v6 else socket.AF_INET, kind, 0, "", sockaddr))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def syslog_sink() -> Iterator[tuple[int, Callable[[], list[bytes]]]]:
    """A real UDP socket on 127.0.0.1, as a syslog server listens: (port, what it received)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(0.5)

        def received() -> list[bytes]:
            datagrams = []
            try:
                while True:
                    datagrams.append(sink.recv(65535))
            except TimeoutError:
                return datagrams

        yield sink.getsockname()[1], received


def _refused_at_save(kind: str, target: str) -> str:
    with pytest.raises(ValidationError) as excinfo:
        Channel(name="c", kind=kind, target=target).full_clean()
    [message] = excinfo.value.message_dict["target"]
    return message


def _deliver(channel: Channel) -> Any:
    return notification_deliver(notification_id=channel_test_send(channel=channel).pk)


def _mail_target(port: int) -> str:
    # The mail server is named by ?smtp=, apart from the addresses' domain.
    return f"mailto://example.com:{port}/?smtp=127.0.0.1&from=alerts@example.com&to=ops@example.com"


# --- apprise's mail: SMTP -----------------------------------------------------------------------------


def test_an_apprise_mailto_whose_mail_server_is_inside_is_refused_at_save(settings):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    with smtp_server() as (controller, sink):
        message = _refused_at_save("apprise", _mail_target(controller.port))
    assert "127.0.0.1, a loopback address: refused" in message
    assert sink.messages == []


def test_an_apprise_mailto_saved_earlier_is_refused_where_it_connects_and_the_server_gets_nothing(settings):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    with smtp_server() as (controller, sink):
        channel = ChannelFactory(name="mail relay", kind="apprise", target=_mail_target(controller.port))
        result = _deliver(channel)
    assert sink.messages == []
    assert result.status == "failed" and "127.0.0.1, a loopback address: refused" in result.error
    channel.refresh_from_db()
    assert not channel.is_enabled and "127.0.0.1" in channel.disabled_reason


def test_an_apprise_mailto_whose_name_moved_inside_after_the_save_is_refused_at_delivery(settings, names):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    names["mail.partner.example"] = ["93.184.216.34"]
    with smtp_server() as (controller, sink):
        target = f"mailto://example.com:{controller.port}/?smtp=mail.partner.example&from=alerts@example.com&to=ops@example.com"
        channel = Channel(name="mail", kind="apprise", target=target)
        channel.full_clean()
        channel.save()
        names["mail.partner.example"] = ["127.0.0.1"]
        result = _deliver(channel)
    assert sink.messages == []
    assert result.status == "failed" and "127.0.0.1, a loopback address: refused" in result.error


def test_an_apprise_mailto_inside_the_allowed_networks_is_saved_and_delivered(settings):
    settings.CHANNEL_ALLOWED_NETWORKS = INSIDE
    with smtp_server() as (controller, sink):
        channel = Channel(name="mail relay", kind="apprise", target=_mail_target(controller.port))
        channel.full_clean()
        channel.save()
        assert _deliver(channel).status == "sent"
    [envelope] = sink.messages
    assert envelope.rcpt_tos == ["ops@example.com"] and b"Test notification" in envelope.content


# --- apprise's remote syslog: UDP ---------------------------------------------------------------------


def test_an_rsyslog_channel_to_a_decimal_loopback_address_is_refused_at_save(settings, syslog_sink):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    port, _ = syslog_sink
    message = _refused_at_save("apprise", f"rsyslog://2130706433:{port}/")
    assert "2130706433 resolves to 127.0.0.1, a loopback address: refused" in message


def test_an_rsyslog_channel_saved_earlier_sends_no_datagram_inside(settings, syslog_sink):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    port, received = syslog_sink
    channel = ChannelFactory(name="syslog", kind="apprise", target=f"rsyslog://2130706433:{port}/")
    result = _deliver(channel)
    assert received() == []
    assert result.status == "failed" and "resolves to 127.0.0.1, a loopback address: refused" in result.error


def test_an_rsyslog_channel_inside_the_allowed_networks_is_saved_and_delivered(settings, syslog_sink):
    settings.CHANNEL_ALLOWED_NETWORKS = INSIDE
    port, received = syslog_sink
    channel = Channel(name="syslog", kind="apprise", target=f"rsyslog://2130706433:{port}/")
    channel.full_clean()
    channel.save()
    assert _deliver(channel).status == "sent"
    [datagram] = received()
    assert b"Test notification from costcontrol" in datagram


# --- HTTP services: every spelling of a host is resolved as the connection would resolve it ------------


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("json://2130706433:8080/hook", "2130706433 resolves to 127.0.0.1"),  # decimal
        ("jsons://0x7f000001/hook", "0x7f000001 resolves to 127.0.0.1"),  # hex
        ("xml://017700000001/hook", "017700000001 resolves to 127.0.0.1"),  # octal
        ("xmls://0xa000005/hook", "0xa000005 resolves to 10.0.0.5"),
        ("form://intranet/hook", "intranet resolves to 10.0.0.5"),  # a name without a dot
        ("forms://relay:8443/hook", "relay resolves to 10.0.0.5"),
        ("mmost://intranet/token", "intranet resolves to 10.0.0.5"),
        ("ntfys://intranet/alerts", "intranet resolves to 10.0.0.5"),
    ],
)
def test_numeric_and_dotless_hosts_are_resolved_and_refused_at_save(settings, names, target, shown):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    names["intranet"] = names["relay"] = ["10.0.0.5"]
    message = _refused_at_save("apprise", target)
    assert shown in message and "refused" in message
    settings.CHANNEL_ALLOWED_NETWORKS = INSIDE
    Channel(name="c", kind="apprise", target=target).full_clean()


def test_a_json_channel_to_a_decimal_loopback_address_delivers_only_when_allowed(settings):
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        target = f"json://2130706433:{port}/hook"
        settings.CHANNEL_ALLOWED_NETWORKS = []
        refused = _deliver(ChannelFactory(name="refused", kind="apprise", target=target))
        assert receiver.requests == []
        settings.CHANNEL_ALLOWED_NETWORKS = INSIDE
        delivered = _deliver(ChannelFactory(name="allowed", kind="apprise", target=target))
    assert refused.status == "failed" and "127.0.0.1, a loopback address: refused" in refused.error
    assert delivered.status == "sent" and len(receiver.requests) == 1


def test_ntfy_s_own_service_names_no_host_of_ours(settings, names):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    names["alerts"] = ["10.0.0.5"]  # a topic that happens to be a local name is still a topic
    Channel(name="c", kind="apprise", target="ntfy://alerts").full_clean()


# --- schemes nobody tried here --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["syslog://", "gotify://push.example.com/token", "kodi://kodi.example.com"])
def test_a_scheme_off_the_list_is_refused_at_save_naming_the_schemes_that_can_be_used(target):
    message = _refused_at_save("apprise", target)
    scheme = target.partition("://")[0]
    assert f"{scheme}:// cannot be used for a channel" in message
    assert "json://" in message and "mailtos://" in message and "slack://" in message


def test_a_channel_saved_with_a_scheme_off_the_list_is_refused_at_delivery_and_disabled():
    channel = ChannelFactory(name="local syslog", kind="apprise", target="syslog://")
    result = _deliver(channel)
    assert result.status == "failed" and "syslog:// cannot be used for a channel" in result.error
    assert Notification.objects.get(channel=channel).status == NotificationStatus.FAILED
    channel.refresh_from_db()
    assert not channel.is_enabled


# --- the socket-level guard itself ----------------------------------------------------------------------


def test_inside_the_guard_every_tcp_connect_and_udp_datagram_to_a_blocked_address_is_refused(settings, syslog_sink):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    port, received = syslog_sink
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        tcp_port = server.getsockname()[1]
        with netguard.guarded_connections() as guard:
            with pytest.raises(netguard.BlockedAddress), socket.create_connection(("127.0.0.1", tcp_port)):
                pass
            with socket.socket() as tcp:
                with pytest.raises(netguard.BlockedAddress, match=re.escape("localhost resolves to 127.0.0.1")):
                    tcp.connect_ex(("localhost", tcp_port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                with pytest.raises(netguard.BlockedAddress):
                    udp.sendto(b"secret", ("127.0.0.1", port))
                with pytest.raises(netguard.BlockedAddress):
                    udp.sendto(b"secret", 0, ("2130706433", port))
                with pytest.raises(netguard.BlockedAddress):
                    udp.connect(("127.1", port))
            with socket.socket(socket.AF_UNIX) as local, pytest.raises(netguard.BlockedAddress, match="AF_UNIX"):
                local.connect("/dev/log")
        assert len(guard.blocked) == 6
        # Outside the guard the same sockets work as ever (the application's own connections).
        socket.create_connection(("127.0.0.1", tcp_port)).close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"not a channel", ("127.0.0.1", port))
    assert received() == [b"not a channel"]


def test_inside_the_guard_a_name_is_resolved_once_and_the_checked_address_is_the_one_used(settings, monkeypatch):
    """DNS that answers differently for the check and for the connection cannot slip through: the
    guard hands the socket the address it checked."""
    settings.CHANNEL_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    answers = iter([["127.0.0.2"]])
    real = socket.getaddrinfo

    def flip(host: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "flip.example":
            addresses = next(answers, ["127.0.0.1"])
            return [(socket.AF_INET, socket.SOCK_DGRAM, 0, "", (a, args[0])) for a in addresses]
        return real(host, *args, **kwargs)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        try:
            sink.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 cannot be bound here")
        sink.settimeout(1)
        port = sink.getsockname()[1]
        monkeypatch.setattr(socket, "getaddrinfo", flip)
        with netguard.guarded_connections(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"to the checked address", ("flip.example", port))
        assert sink.recv(100) == b"to the checked address"
