"""The daily report preview in the admin: any day, the same subject, HTML and text as the email
(built by daily_report_build and rendered by the email's own template), for superusers only (the
report sums every team's spend)."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.models import Notification, NotificationKind
from alerts.report_email import daily_report_html, daily_report_send, daily_report_subject, daily_report_text
from alerts.reports import daily_report_build
from tests.factories import ChannelFactory, TeamFactory
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

URL = "admin:alerts_daily_report"


def preview(client: Client, **params: str):
    return client.get(reverse(URL), params)


def frame(response) -> str:
    """The HTML part shown in the page's frame, as the email carries it."""
    match = re.search(r'<iframe id="cc-report-html"[^>]* srcdoc="([^"]*)"', response.content.decode())
    assert match is not None, "no report frame"
    return html.unescape(match.group(1))


def test_a_superuser_previews_any_days_report_as_the_email_shows_it(admin_client, gpt4o_prices, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    day = date(2026, 11, 18)
    cost_entry_record(
        provider="openai",
        model="gpt-4o",
        amount="1234.5",
        occurred_at=datetime(2026, 11, 18, 9, 30, tzinfo=timezone.get_fixed_timezone(60)),
        idempotency_key="preview-1",
        service="lead-scoring",
    )
    with time_machine.travel(datetime(2026, 11, 20, 8, 0, tzinfo=timezone.get_fixed_timezone(60)), tick=False):
        response = preview(admin_client, day="2026-11-18")
        report = daily_report_build(day=day)
    assert response.status_code == 200
    shown = response.content.decode()
    assert html.unescape(re.search(r'id="cc-report-subject">([^<]*)<', shown).group(1)) == daily_report_subject(report)
    assert "1,234.50 USD" in daily_report_subject(report)
    # The email's own HTML, from the email's template, and its text part.
    assert frame(response) == daily_report_html(report)
    assert "lead-scoring" in frame(response)
    text = html.unescape(re.search(r'<pre id="cc-report-text">(.*?)</pre>', shown, re.S).group(1))
    assert text == daily_report_text(report)
    # Days around it, one click away.
    assert 'href="?day=2026-11-17"' in shown and 'href="?day=2026-11-19"' in shown


def test_without_a_day_it_shows_yesterdays_report_the_one_sent_this_morning(admin_client):
    response = preview(admin_client)
    assert response.status_code == 200
    yesterday = timezone.localdate() - timedelta(days=1)
    assert f'value="{yesterday.isoformat()}"' in response.content.decode()
    assert 'id="cc-next-day"' in response.content.decode()  # today's, so far


def test_a_day_that_is_not_a_date_or_has_not_begun_is_refused_naming_the_field(admin_client):
    response = preview(admin_client, day="18/11/2026")
    assert response.status_code == 400
    assert "day: &#x27;18/11/2026&#x27; is not a date; write it as YYYY-MM-DD" in response.content.decode()
    tomorrow = timezone.localdate() + timedelta(days=1)
    response = preview(admin_client, day=tomorrow.isoformat())
    assert response.status_code == 400 and "has not begun yet" in response.content.decode()
    assert 'id="cc-report-html"' not in response.content.decode()


def test_it_says_who_receives_the_report_or_that_nobody_does(admin_client):
    assert "No enabled channel receives the daily report" in preview(admin_client).content.decode()
    ChannelFactory(name="finance", receives_reports=True)
    shown = preview(admin_client).content.decode()
    assert "Sent each morning to finance (email)" in shown


def test_only_superusers_see_the_preview_the_report_covers_every_team(admin_client):
    alpha = TeamFactory(name="alpha")
    staff = User.objects.create_user("alice", password="pw-not-used", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="alerts"))
    alpha.members.add(staff)
    client = Client()
    client.force_login(staff)
    assert preview(client).status_code == 403
    assert reverse(URL) not in client.get(reverse("admin:alerts_alert_changelist")).content.decode()
    anonymous = Client().get(reverse(URL))
    assert anonymous.status_code == 302 and "/login/" in anonymous.url
    # The superuser reaches it from the alert list.
    assert f'href="{reverse(URL)}"' in admin_client.get(reverse("admin:alerts_alert_changelist")).content.decode()


def test_a_sent_reports_notification_links_to_its_preview(admin_client):
    ChannelFactory(name="finance", receives_reports=True)
    day = timezone.localdate() - timedelta(days=2)
    assert daily_report_send(day=day) == 1
    notification = Notification.objects.get(kind=NotificationKind.REPORT)
    shown = admin_client.get(reverse("admin:alerts_notification_change", args=[notification.pk])).content.decode()
    assert f'href="{reverse(URL)}?day={day.isoformat()}"' in shown
    assert "&quot;kind&quot;: &quot;costcontrol.daily_report&quot;" not in shown  # no raw JSON
