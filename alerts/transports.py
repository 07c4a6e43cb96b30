"""Channels' transports: one class per kind, a registry from kind to class (healthchecks' pattern).

`Transport.notify(message)` delivers or raises `TransportError(reason, permanent=...)`:
- transient (timeouts, refused connections, HTTP 429 and 5xx, SMTP server away): retried with backoff;
- permanent (HTTP 4xx other than 429, an address the server refuses, a URL that cannot be used):
  the notification goes to the dead letters and the channel is disabled with the reason.

Email goes through Django's mail backend; the generic webhook is a signed JSON POST (requests);
every other kind goes through apprise (the services in APPRISE_SCHEMES only), so no service's HTTP
API is written by hand here. Webhook and apprise deliveries run inside netguard.guarded_connections():
every connection they make is checked (the SSRF guard); email's server is the operator's and is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import apprise
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email

from . import netguard

SIGNATURE_HEADER = "X-Costcontrol-Signature"
DELIVERY_HEADER = "X-Costcontrol-Delivery"
TIMEOUT_SECONDS = 10


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """What a notification says, in every form a transport may need."""

    subject: str
    text: str
    html: str = ""
    level: str = ""
    kind: str = ""
    delivery_id: str = ""  # the notification's dedup key: receivers can drop a repeat
    payload: dict[str, Any] = field(default_factory=dict)


def webhook_signature(secret: str, body: bytes) -> str:
    """The signature header's value: "sha256=" + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Transport:
    kind: ClassVar[str]

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def validate(self) -> None:
        """Raise ValidationError naming the field when the channel cannot be used."""

    def notify(self, message: Message) -> None:
        raise NotImplementedError

    def hosts(self) -> list[tuple[str, int | None]]:
        """The (host, port) pairs the target names that this server would connect to (SSRF guard)."""
        return []

    def check_addresses(self) -> None:
        """At save: refuse a target whose host resolves to an address channels may not reach."""
        for host, port in self.hosts():
            try:
                netguard.check_host(host, port)
            except netguard.BlockedAddress as exc:
                raise ValidationError({"target": str(exc)}) from None

    def scrub(self, text: str) -> str:
        """`text` with the secret parts of the target (tokens in its path, query, user info) masked:
        error messages are stored, shown in the admin and logged."""
        return scrub_target(text, self.channel.target or "", keep={h for h, _ in self.hosts()})


# Runs of URL characters in a target that may be a token; '=', '&', '/', ':' and '@' separate them.
_TOKEN = re.compile(r"[A-Za-z0-9_\-.~%]+")


def scrub_target(text: str, target: str, *, keep: set[str] | frozenset[str] = frozenset()) -> str:
    """Mask in `text` every part of `target` that may be a secret: runs of 6+ characters with a digit
    or a capital, and any run of 16+ (plain words such as "services" and the hosts in `keep` stay)."""
    target = target.strip()
    if not target or not text:
        return text
    _scheme, sep, rest = target.partition("://")
    rest = rest if sep else target
    candidates = set(_TOKEN.findall(rest)) | set(_TOKEN.findall(unquote(rest)))
    secrets = sorted(
        (
            t
            for t in candidates
            if t not in keep and (len(t) >= 16 or (len(t) >= 6 and any(c.isdigit() or c.isupper() for c in t)))
        ),
        key=len,
        reverse=True,
    )
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# --- email --------------------------------------------------------------------------------------


def email_message_id(delivery_id: str) -> str:
    """A notification's Message-ID, the same on every attempt: a copy sent again (a worker died after
    the mail server accepted it, before the delivery was recorded) is recognisably the same message,
    which mailbox providers such as Gmail and many mail clients show once."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:40]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip("<> ") or "costcontrol"
    return f"<{digest}@{domain}>"


class EmailTransport(Transport):
    kind = "email"

    @property
    def addresses(self) -> list[str]:
        return [a.strip() for a in re.split(r"[,;\s]+", self.channel.target or "") if a.strip()]

    def validate(self) -> None:
        if not self.addresses:
            raise ValidationError({"target": "give at least one email address"})
        for address in self.addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"target": f"{address!r} is not a valid email address"}) from None

    def notify(self, message: Message) -> None:
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=self.addresses,
            connection=get_connection(timeout=TIMEOUT_SECONDS),
            headers={"Message-ID": email_message_id(message.delivery_id)} if message.delivery_id else None,
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        try:
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"the mail server refused the address(es): {exc.recipients}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx replies are permanent (bad address, policy); 4xx are "try again later".
            raise TransportError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, server gone
            raise TransportError(f"mail server unavailable: {exc}") from exc


# --- generic signed webhook -----------------------------------------------------------------------


class WebhookTransport(Transport):
    kind = "webhook"

    def validate(self) -> None:
        url = (self.channel.target or "").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError({"target": "a webhook needs an http:// or https:// URL"})
        self.check_addresses()

    def hosts(self) -> list[tuple[str, int | None]]:
        return _url_host(self.channel.target or "")

    def notify(self, message: Message) -> None:
        body = json.dumps(
            {
                "kind": message.kind,
                "level": message.level,
                "subject": message.subject,
                "text": message.text,
                "delivery_id": message.delivery_id,
                **message.payload,
            },
            sort_keys=True,
            default=str,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "costcontrol",
            DELIVERY_HEADER: message.delivery_id,
            SIGNATURE_HEADER: webhook_signature(self.channel.secret, body),
        }
        with netguard.guarded_connections() as guard:
            try:
                response = requests.post(
                    self.channel.target.strip(), data=body, headers=headers, timeout=TIMEOUT_SECONDS
                )
            except requests.RequestException as exc:
                if guard.blocked:  # DNS that changed since the save, or a redirect
                    raise TransportError(f"webhook: {guard.blocked[0]}", permanent=True) from exc
                raise TransportError(self.scrub(f"webhook unreachable: {exc.__class__.__name__}: {exc}")) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = self.scrub(f"webhook answered HTTP {status}: {response.text[:200]!r}")
        raise TransportError(detail, permanent=400 <= status < 500 and status not in (408, 429))


def _url_host(url: str) -> list[tuple[str, int | None]]:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    return [(parts.hostname, port)] if parts.scheme in ("http", "https") and parts.hostname else []


# --- apprise: Slack, Teams, Discord, PagerDuty and the services below --------------------------------

# The apprise services a channel may use, by the schemes that name them, and the server each one
# connects to: "host", the host (and port) its URL names; "smtp_host", the mail server apprise takes
# from the URL (the address's domain, a known provider's server, or ?smtp=); None, the vendor's own
# public API. Each was tried here, and all of them connect through Python sockets, which the guard
# checks at delivery. Any other scheme is refused: apprise also speaks to local services (D-Bus, the
# local syslog, desktop notifications) and through libraries that no guard here sees.
APPRISE_SCHEMES: dict[str, str | None] = {
    "json": "host",
    "jsons": "host",
    "xml": "host",
    "xmls": "host",
    "form": "host",
    "forms": "host",
    "mmost": "host",  # Mattermost
    "mmosts": "host",
    "ntfy": "host",  # a self-hosted ntfy; ntfy.sh (mode "cloud") when the URL names a topic only
    "ntfys": "host",
    "workflow": "host",  # Microsoft Teams (Power Automate workflows)
    "workflows": "host",
    "rsyslog": "host",  # one UDP datagram to a remote syslog server
    "mailto": "smtp_host",
    "mailtos": "smtp_host",
    "slack": None,
    "discord": None,
    "pagerduty": None,
}

_STATUS_IN_LOG = re.compile(r"error=(\d{3})")


class AppriseTransport(Transport):
    kind = "apprise"
    # The apprise services a kind accepts (its plugin's protocols); empty: any of APPRISE_SCHEMES.
    services: ClassVar[tuple[str, ...]] = ()
    example: ClassVar[str] = "e.g. json://host/path or mailtos://user:password@host/?to=ops@example.com"

    def _plugin(self) -> Any:
        return apprise.Apprise.instantiate(self.channel.target.strip(), suppress_exceptions=True)

    def _refusal(self, plugin: Any) -> str | None:
        """Why apprise's plugin for this target may not be used here, or None."""
        if plugin is None:
            return f"not a URL apprise can send to ({self.example})"
        protocols = _protocols(plugin)
        if self.services and not protocols & set(self.services):
            return f"not a {self.kind} URL ({self.example})"
        if not protocols & APPRISE_SCHEMES.keys():
            scheme = (self.channel.target or "").strip().partition("://")[0] or "this"
            return f"{scheme}:// cannot be used for a channel; the services that can: " + ", ".join(
                f"{s}://" for s in sorted(APPRISE_SCHEMES)
            )
        return None

    def validate(self) -> None:
        url = (self.channel.target or "").strip()
        if refusal := self._refusal(self._plugin() if url else None):
            raise ValidationError({"target": refusal})
        self.check_addresses()

    def hosts(self) -> list[tuple[str, int | None]]:
        """The host of an https:// URL apprise recognises (Slack's, Discord's, Teams') and the server
        apprise parsed from the URL for a service that connects to one the URL names."""
        target = (self.channel.target or "").strip()
        found = _url_host(target)
        plugin = self._plugin() if target else None
        if plugin is not None:
            found += _apprise_hosts(plugin)
        return list(dict.fromkeys(found))

    def notify(self, message: Message) -> None:
        plugin = self._plugin()
        if refusal := self._refusal(plugin):  # a channel saved before its scheme was refused
            raise TransportError(f"{self.kind}: {refusal}", permanent=True)
        sender = apprise.Apprise()
        sender.add(plugin)
        with netguard.guarded_connections() as guard, apprise.LogCapture(level=apprise.logging.INFO) as log:
            ok = sender.notify(title=message.subject, body=message.text, body_format=apprise.NotifyFormat.TEXT)
            output = log.getvalue()
        if ok:
            return
        if guard.blocked:
            raise TransportError(f"{self.kind}: {guard.blocked[0]}", permanent=True)
        statuses = [int(s) for s in _STATUS_IN_LOG.findall(output)]
        permanent = any(400 <= s < 500 and s not in (408, 429) for s in statuses)
        last = output.strip().splitlines()[-1] if output.strip() else "no detail"
        raise TransportError(self.scrub(f"{self.kind} delivery failed: {last}"), permanent=permanent)


def _protocols(plugin: Any) -> set[str]:
    found: set[str] = set()
    for name in ("protocol", "secure_protocol"):
        value = getattr(plugin, name, None)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(v for v in value if isinstance(v, str))
    return found


def _apprise_hosts(plugin: Any) -> list[tuple[str, int | None]]:
    """The (host, port) of the server apprise's plugin connects to when its URL names one (see
    APPRISE_SCHEMES), taken from apprise's own parse of the URL."""
    attribute = next((APPRISE_SCHEMES[p] for p in sorted(_protocols(plugin)) if p in APPRISE_SCHEMES), None)
    if attribute is None or getattr(plugin, "mode", None) == "cloud":  # ntfy.sh, ntfy's own service
        return []
    host, port = getattr(plugin, attribute, None), getattr(plugin, "port", None)
    return [(host, port if isinstance(port, int) else None)] if isinstance(host, str) and host else []


class SlackTransport(AppriseTransport):
    kind = "slack"
    services = ("slack",)
    example = "https://hooks.slack.com/services/T.../B.../... or slack://..."


class TeamsTransport(AppriseTransport):
    # Microsoft retired Teams' Office 365 connectors; Teams channels take Power Automate workflows.
    kind = "msteams"
    services = ("workflow", "workflows")
    example = "the Teams workflow's https://...logic.azure.com/workflows/... URL or workflows://HOST/WORKFLOW/SIGNATURE"


class DiscordTransport(AppriseTransport):
    kind = "discord"
    services = ("discord",)
    example = "https://discord.com/api/webhooks/ID/TOKEN or discord://ID/TOKEN"


class PagerDutyTransport(AppriseTransport):
    kind = "pagerduty"
    services = ("pagerduty",)
    example = "pagerduty://INTEGRATION_KEY@API_KEY"


TRANSPORTS: dict[str, type[Transport]] = {
    cls.kind: cls
    for cls in (
        EmailTransport,
        WebhookTransport,
        SlackTransport,
        TeamsTransport,
        DiscordTransport,
        PagerDutyTransport,
        AppriseTransport,
    )
}


def transport_for(channel: Any) -> Transport:
    try:
        return TRANSPORTS[channel.kind](channel)
    except KeyError:
        raise ValidationError({"kind": f"unknown channel kind {channel.kind!r}"}) from None
