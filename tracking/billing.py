"""What the providers say they billed: imported beside the ledger, never into it.

Three kinds of BillingSource:

- ``openai``: the organization Costs API, ``GET /v1/organization/costs`` (start_time / end_time in Unix
  seconds, bucket_width=1d, group_by=project_id and line_item, cursor pagination by ``page`` /
  ``next_page``; ``Authorization: Bearer`` an admin key). ``amount.value`` is a JSON number in the
  currency's unit; it is read as a Decimal (never a float) and rounded half-to-even to the ledger's 9 places.
- ``anthropic``: the Admin API cost report, ``GET /v1/organizations/cost_report`` (starting_at /
  ending_at RFC 3339, bucket_width=1d, group_by[]=workspace_id and description, ``page`` / ``next_page``;
  headers ``x-api-key`` and ``anthropic-version: 2023-06-01``). ``amount`` is a decimal *string in the
  currency's lowest unit* (cents for USD: "123.45" is 1.2345 USD), divided exactly.
- ``csv``: invoice lines uploaded by a person (:func:`bills_import_csv`).

A pull reads each closed UTC day on its own (all its pages) and either replaces that day's BilledCost
lines whole, in one transaction, or changes nothing of it and marks its BillingDay failed with a message
that names the page and field; failed days are tried again by the following pulls. The same lines read
again write nothing (the rows, their ids and imported_at stay). A day that is not over (today, UTC) is
never imported: its costs are still growing.

Billed amounts may not be negative: credits, refunds and promotional grants are not imported (they are
not a day's usage, and would make the metered-vs-billed drift of that day meaningless). A negative line
fails its day with a message saying so.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import requests
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.utils import timezone

from core.money import MONEY_MAX, parse_currency, parse_decimal, parse_money, round_money

from .models import BilledCost, BillingDay, BillingSource

logger = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com"
ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
RETRY_DAYS = 35  # a failed day older than this is no longer tried again by the daily pull
MAX_PAGES = 100  # of one day: more means a cursor that never ends
HTTP_TIMEOUT = (10, 60)  # seconds: connect, read
RETRIES = 3  # answers 429 (or 503) tried again this many times ...
RETRY_AFTER_MAX_SECONDS = 60  # ... each after the Retry-After the provider asks, at most this long
# Minor units of currencies whose lowest unit is not a hundredth (the Anthropic report counts in lowest units).
MINOR_UNITS = {"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3}
MINOR_UNITS |= dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX"], 0)
MINOR_UNITS |= dict.fromkeys(["VND", "VUV", "XAF", "XOF", "XPF"], 0)

CSV_REQUIRED = ("day", "model", "amount", "currency")
CSV_OPTIONAL = ("account", "description")


class BillingError(Exception):
    """A pull or an import that cannot be trusted: nothing of the day (or the file) was changed."""


@dataclass(frozen=True)
class BillLine:
    day: date
    model: str
    account: str
    description: str
    currency: str
    amount: Decimal

    @property
    def key(self) -> tuple[str, str, str, str, Decimal]:
        return (self.model, self.account, self.description, self.currency, self.amount)


@dataclass(frozen=True)
class DayResult:
    source: str
    day: date
    ok: bool
    lines: int
    changed: bool
    message: str = ""

    def __str__(self) -> str:
        if not self.ok:
            return f"{self.source} {self.day}: failed: {self.message}"
        what = "imported" if self.changed else "unchanged"
        return f"{self.source} {self.day}: {what}, {self.lines} line(s)"


# --- the admin key ----------------------------------------------------------------------------------


def _fernet() -> Fernet:
    """BILLING_ENCRYPTION_KEY when set (a Fernet key), else a key derived from SECRET_KEY (HKDF-SHA256):
    changing either makes stored admin keys unreadable, and they must be entered again."""
    configured = getattr(settings, "BILLING_ENCRYPTION_KEY", "")
    if configured:
        try:
            return Fernet(configured)
        except ValueError:
            raise ImproperlyConfigured(
                "BILLING_ENCRYPTION_KEY must be 32 url-safe base64-encoded bytes (Fernet.generate_key())"
            ) from None
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"costcontrol billing admin keys").derive(
        settings.SECRET_KEY.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def billing_key_set(source: BillingSource, key: str) -> None:
    """Store `key` encrypted on the source; an empty key clears the stored one."""
    key = key.strip()
    source.admin_key_encrypted = _fernet().encrypt(key.encode()).decode() if key else ""
    source.save(update_fields=["admin_key_encrypted"])


def billing_key(source: BillingSource) -> str:
    """The admin key: read from admin_key_file at each call when it is set, else the stored one decrypted."""
    if source.admin_key_file:
        try:
            key = Path(source.admin_key_file).read_text().strip()
        except OSError as exc:
            raise BillingError(f"the admin key file {source.admin_key_file} cannot be read: {exc.strerror}") from None
        if not key:
            raise BillingError(f"the admin key file {source.admin_key_file} is empty")
        return key
    if not source.admin_key_encrypted:
        raise BillingError("no admin key: enter one on the billing source, or name an admin key file")
    try:
        return _fernet().decrypt(source.admin_key_encrypted.encode()).decode()
    except InvalidToken:
        raise BillingError(
            "the stored admin key cannot be decrypted (DJANGO_SECRET_KEY or BILLING_ENCRYPTION_KEY changed): "
            "enter it again"
        ) from None


# --- HTTP -------------------------------------------------------------------------------------------


def _retry_after(response: requests.Response, attempt: int) -> float:
    """The wait the provider asks for (seconds or an HTTP date), else 1, 2, 4 s; never above the bound."""
    raw = response.headers.get("Retry-After", "").strip()
    wait: float = 2.0**attempt
    if raw:
        try:
            wait = float(raw)
        except ValueError:
            try:
                wait = (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                pass
    return min(max(wait, 0.0), RETRY_AFTER_MAX_SECONDS)


def _error_text(response: requests.Response, key: str) -> str:
    """The provider's own error message (both APIs answer {"error": {"message": ...}}), shortened."""
    try:
        body = response.json()
        text = str(body["error"]["message"]) if isinstance(body.get("error"), dict) else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        text = ""
    text = text or response.text[:200]
    if key:
        text = text.replace(key, "[admin key]")
    return " ".join(text.split())[:300]


def _get_json(
    session: requests.Session, url: str, params: list[tuple[str, str]], headers: dict[str, str], key: str, where: str
) -> dict[str, Any]:
    for attempt in range(RETRIES + 1):
        try:
            response = session.get(url, params=params, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise BillingError(f"{where}: the provider cannot be reached ({type(exc).__name__})") from None
        if response.status_code in (429, 503) and attempt < RETRIES:
            wait = _retry_after(response, attempt)
            logger.info("%s: HTTP %s, trying again in %.1f s", where, response.status_code, wait)
            time.sleep(wait)
            continue
        if response.status_code != 200:
            detail = _error_text(response, key)
            tried = f" after {RETRIES + 1} tries" if response.status_code in (429, 503) else ""
            raise BillingError(f"{where}: HTTP {response.status_code}{tried}" + (f": {detail}" if detail else ""))
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise BillingError(f"{where}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise BillingError(f"{where}: the answer is not a JSON object")
        return body
    raise AssertionError("unreachable")  # pragma: no cover


def _pages(
    session: requests.Session, url: str, params: list[tuple[str, str]], headers: dict[str, str], key: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every page of one query, following next_page while has_more; yields ("page N", body)."""
    cursor = None
    for number in range(1, MAX_PAGES + 1):
        where = f"page {number}"
        body = _get_json(session, url, params + ([("page", cursor)] if cursor else []), headers, key, where)
        yield where, body
        if not body.get("has_more"):
            return
        cursor = body.get("next_page")
        if not isinstance(cursor, str) or not cursor:
            raise BillingError(f"{where}: has_more is true but next_page is missing")
    raise BillingError(f"more than {MAX_PAGES} pages for one day: the cursor does not end")


def _base_url(source: BillingSource, default: str) -> str:
    base = (source.api_url or default).rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


# --- values -----------------------------------------------------------------------------------------


def _amount(value: Any, *, where: str, field: str, minor_units: int | None = None) -> Decimal:
    """A billed amount: a number (JSON number read as Decimal, or a decimal string), finite, not negative;
    given in lowest units when `minor_units` is set (divided exactly), rounded to the ledger's 9 places."""
    try:
        amount = parse_decimal(value, field=field)
    except ValidationError:
        raise BillingError(f"{where}: {field} {value!r} is not a number") from None
    if minor_units:
        amount = amount.scaleb(-minor_units)
    if amount < 0:
        raise BillingError(f"{where}: {field} {value} is negative (credits and refunds are not imported)")
    if amount > MONEY_MAX:
        raise BillingError(f"{where}: {field} {value} is out of range")
    return round_money(amount) + 0  # + 0: -0 is 0


def _currency(value: Any, *, where: str, field: str) -> str:
    try:
        return parse_currency(value, field=field)
    except ValidationError:
        raise BillingError(f"{where}: unknown currency {value!r} in {field} (expected an ISO 4217 code)") from None


def _text(value: Any, limit: int) -> str:
    """A label as the provider gives it (null: empty), cut to the column's length."""
    return "" if value is None else str(value).strip()[:limit]


def _bucket_day(value: Any, *, where: str, field: str) -> date:
    """A bucket's start (Unix seconds or RFC 3339) as a UTC day; it must be a UTC midnight."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError):
        raise BillingError(f"{where}: {field} {value!r} is missing or not a time") from None
    if moment.time() != datetime.min.time():
        raise BillingError(f"{where}: {field} {value} is not the start of a UTC day")
    return moment.date()


def _day_lines(
    pages: Iterable[tuple[str, dict[str, Any]]],
    *,
    day: date,
    today: date,
    start_field: str,
    parse: Callable[[dict[str, Any], str, date], BillLine],
) -> list[BillLine]:
    """The lines of `day` from every page (a day's results may be split over several pages). A bucket of a
    day not over yet is left out (partial); a bucket of another closed day, or none for `day`, is an error."""
    lines: list[BillLine] = []
    seen = False
    for where, body in pages:
        buckets = body.get("data")
        if not isinstance(buckets, list):
            raise BillingError(f"{where}: no data list in the answer")
        for number, bucket in enumerate(buckets, 1):
            at = f"{where}, bucket {number}"
            if not isinstance(bucket, dict):
                raise BillingError(f"{at}: not an object")
            bucket_day = _bucket_day(bucket.get(start_field), where=at, field=start_field)
            if bucket_day >= today:
                continue  # the day is not over: its costs are still growing
            if bucket_day != day:
                raise BillingError(f"{at}: a bucket for {bucket_day} in the answer for {day}")
            seen = True
            results = bucket.get("results")
            if not isinstance(results, list):
                raise BillingError(f"{at}: no results list")
            for index, result in enumerate(results, 1):
                if not isinstance(result, dict):
                    raise BillingError(f"{at}, result {index}: not an object")
                lines.append(parse(result, f"{at}, result {index}", day))
    if not seen:
        raise BillingError(f"the answer has no bucket for {day}")
    return lines


def _openai_result(result: dict[str, Any], where: str, day: date) -> BillLine:
    amount = result.get("amount")
    if not isinstance(amount, dict):
        raise BillingError(f"{where}: amount is missing")
    line_item = _text(result.get("line_item"), 300)
    # "gpt-4o-2024-08-06, input": the model, then what of it was billed; a line item without one
    # ("web search tool calls") is not a model's.
    model = line_item.split(", ", 1)[0] if ", " in line_item else ""
    return BillLine(
        day=day,
        model=model[:200],
        account=_text(result.get("project_id"), 200),
        description=line_item,
        currency=_currency(amount.get("currency"), where=where, field="amount.currency"),
        amount=_amount(amount.get("value"), where=where, field="amount.value"),
    )


def _anthropic_result(result: dict[str, Any], where: str, day: date) -> BillLine:
    currency = _currency(result.get("currency"), where=where, field="currency")
    description = _text(result.get("description"), 300) or _text(result.get("cost_type"), 300)
    return BillLine(
        day=day,
        model=_text(result.get("model"), 200),
        account=_text(result.get("workspace_id"), 200),
        description=description,
        currency=currency,
        amount=_amount(result.get("amount"), where=where, field="amount", minor_units=MINOR_UNITS.get(currency, 2)),
    )


def _openai_fetch(session: requests.Session, source: BillingSource, key: str, day: date, today: date) -> list[BillLine]:
    start = datetime.combine(day, datetime.min.time(), UTC)
    params = [
        ("start_time", str(int(start.timestamp()))),
        ("end_time", str(int((start + timedelta(days=1)).timestamp()))),
        ("bucket_width", "1d"),
        ("group_by", "project_id"),
        ("group_by", "line_item"),
        ("limit", "1"),
    ]
    url = _base_url(source, OPENAI_URL) + "/v1/organization/costs"
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    pages = _pages(session, url, params, headers, key)
    return _day_lines(pages, day=day, today=today, start_field="start_time", parse=_openai_result)


def _anthropic_fetch(
    session: requests.Session, source: BillingSource, key: str, day: date, today: date
) -> list[BillLine]:
    params = [
        ("starting_at", f"{day.isoformat()}T00:00:00Z"),
        ("ending_at", f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z"),
        ("bucket_width", "1d"),
        ("group_by[]", "workspace_id"),
        ("group_by[]", "description"),
        ("limit", "1"),
    ]
    url = _base_url(source, ANTHROPIC_URL) + "/v1/organizations/cost_report"
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "Accept": "application/json"}
    pages = _pages(session, url, params, headers, key)
    return _day_lines(pages, day=day, today=today, start_field="starting_at", parse=_anthropic_result)


FETCHERS = {BillingSource.Kind.OPENAI: _openai_fetch, BillingSource.Kind.ANTHROPIC: _anthropic_fetch}


# --- storing a day ----------------------------------------------------------------------------------


def _day_store(source: BillingSource, day: date, lines: list[BillLine], now: datetime) -> DayResult:
    """Replace the day's lines whole, in one transaction; the same lines again write nothing."""
    with transaction.atomic():
        # One import of a source at a time: two pulls of the same day wait for each other.
        BillingSource.objects.select_for_update().filter(pk=source.pk).first()
        stored = BilledCost.objects.filter(source=source, day=day)
        old = Counter(stored.values_list("model", "account", "description", "currency", "amount"))
        changed = old != Counter(line.key for line in lines)
        if changed:
            stored.delete()
            BilledCost.objects.bulk_create(
                BilledCost(
                    source=source,
                    day=day,
                    provider=source.provider,
                    model=line.model,
                    account=line.account,
                    description=line.description,
                    currency=line.currency,
                    amount=line.amount,
                )
                for line in lines
            )
        record = BillingDay.objects.filter(source=source, day=day).first()
        imported_at = now if changed or record is None or record.imported_at is None else record.imported_at
        BillingDay.objects.update_or_create(
            source=source,
            day=day,
            defaults={
                "status": BillingDay.Status.OK,
                "message": "",
                "lines": len(lines),
                "attempted_at": now,
                "imported_at": imported_at,
            },
        )
    return DayResult(source.name, day, ok=True, lines=len(lines), changed=changed)


def _day_failed(source: BillingSource, day: date, message: str, now: datetime) -> DayResult:
    """The day's lines stay as they were (lines and imported_at keep describing them); the message says why."""
    with transaction.atomic():
        BillingDay.objects.update_or_create(
            source=source,
            day=day,
            defaults={"status": BillingDay.Status.FAILED, "message": message, "attempted_at": now},
            create_defaults={
                "status": BillingDay.Status.FAILED,
                "message": message,
                "attempted_at": now,
                "lines": 0,
            },
        )
    logger.warning("billing source %s, %s: %s", source.name, day, message)
    return DayResult(source.name, day, ok=False, lines=0, changed=False, message=message)


def _source_record(source: BillingSource, results: list[DayResult], now: datetime, error: str = "") -> None:
    failed = [result for result in results if not result.ok]
    if failed and not error:
        first = failed[0]
        error = f"{len(failed)} of {len(results)} day(s) failed; {first.day}: {first.message}"
    source.last_attempt_at = now
    source.last_error = error
    fields = ["last_attempt_at", "last_error"]
    if not error:
        source.last_success_at = now
        fields.append("last_success_at")
    source.save(update_fields=fields)


# --- pulls ------------------------------------------------------------------------------------------


def bills_days(source: BillingSource, *, today: date, days: int | None = None) -> list[date]:
    """The days a pull reads: the last `days` (default: the source's days_back) closed UTC days, and every
    earlier day of the last RETRY_DAYS whose import failed."""
    back = source.days_back if days is None else days
    recent = {today - timedelta(days=n) for n in range(1, back + 1)}
    failed = BillingDay.objects.filter(
        source=source,
        status=BillingDay.Status.FAILED,
        day__gte=today - timedelta(days=RETRY_DAYS),
        day__lt=today,
    ).values_list("day", flat=True)
    return sorted(recent | set(failed))


def bills_pull(source: BillingSource, *, today: date | None = None, days: int | None = None) -> list[DayResult]:
    """Pull the source's closed days from its provider's cost API; one result per day (see the module)."""
    if source.kind not in FETCHERS:
        raise BillingError(f"{source.name} is a {source.get_kind_display()} source: upload its lines, it is not pulled")
    now = timezone.now()
    today = today or now.astimezone(UTC).date()
    try:
        key, key_error = billing_key(source), ""
    except BillingError as exc:
        key, key_error = "", str(exc)
    fetch = FETCHERS[BillingSource.Kind(source.kind)]
    results = []
    with requests.Session() as session:
        session.headers["User-Agent"] = "costcontrol-billing"
        for day in bills_days(source, today=today, days=days):
            try:
                if key_error:
                    raise BillingError(key_error)
                lines = fetch(session, source, key, day, today)
            except BillingError as exc:
                results.append(_day_failed(source, day, str(exc), now))
            else:
                results.append(_day_store(source, day, lines, now))
    _source_record(source, results, now)
    return results


def bills_pull_enabled(*, today: date | None = None) -> list[tuple[BillingSource, list[DayResult] | str]]:
    """Pull every enabled API source; one that raises is recorded and logged, and the others go on."""
    done: list[tuple[BillingSource, list[DayResult] | str]] = []
    sources = BillingSource.objects.filter(enabled=True).exclude(kind=BillingSource.Kind.CSV)
    for source in sources:
        try:
            done.append((source, bills_pull(source, today=today)))
        except Exception as exc:  # a defect or the database: the other sources still get their pull
            logger.exception("billing source %s: the pull stopped", source.name)
            message = f"the pull stopped: {type(exc).__name__}; see the worker's log"
            _source_record(source, [], timezone.now(), error=message)
            done.append((source, message))
    return done


# --- CSV --------------------------------------------------------------------------------------------


def _csv_line(row: dict[str, str], number: int, today: date) -> tuple[BillLine | None, list[str]]:
    errors = []

    def value(column: str) -> str:
        return (row.get(column) or "").strip()

    def fail(column: str, message: str) -> None:
        errors.append(f"line {number}, column {column}: {message}")

    day = None
    try:
        day = date.fromisoformat(value("day"))
    except ValueError:
        fail("day", f"{value('day')!r} is not a date (YYYY-MM-DD)")
    else:
        if day >= today:
            fail("day", f"{day} is not over yet (UTC): only closed days are imported")
    amount = None
    try:
        amount = parse_money(value("amount"), field="amount")
    except ValidationError:
        fail("amount", f"{value('amount')!r} is not an amount (a number with at most 9 decimal places)")
    else:
        if amount < 0:
            fail("amount", f"{value('amount')} is negative (credits and refunds are not imported)")
    currency = None
    try:
        currency = parse_currency(value("currency"))
    except ValidationError:
        fail("currency", f"unknown currency {value('currency')!r} (expected an ISO 4217 code such as USD)")
    for column, limit in (("model", 200), ("account", 200), ("description", 300)):
        if len(value(column)) > limit:
            fail(column, f"longer than {limit} characters")
    if errors or day is None or amount is None or currency is None:
        return None, errors
    line = BillLine(day, value("model"), value("account"), value("description"), currency, amount + 0)
    return line, []


def bills_import_csv(source: BillingSource, file: IO[bytes] | IO[str], *, today: date | None = None) -> list[DayResult]:
    """Import invoice lines from a CSV file (columns day, model, amount, currency; optional account,
    description): all of the file or nothing; every day it covers is replaced whole by its lines there.
    Raises BillingError naming each bad line and column (the first 20)."""
    if source.kind != BillingSource.Kind.CSV:
        raise BillingError(f"{source.name} is pulled from its provider's API; CSV files go to a CSV source")
    now = timezone.now()
    today = today or now.astimezone(UTC).date()
    try:
        raw = file.read()
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip().lower() for name in reader.fieldnames or []]
        missing = [name for name in CSV_REQUIRED if name not in header]
        unknown = [name for name in header if name not in CSV_REQUIRED + CSV_OPTIONAL]
        if missing or unknown:
            problems = [f"missing column(s) {', '.join(missing)}"] if missing else []
            problems += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
            raise BillingError(f"line 1: {'; '.join(problems)} (columns: {', '.join(CSV_REQUIRED + CSV_OPTIONAL)})")
        reader.fieldnames = header
        lines: list[BillLine] = []
        errors: list[str] = []
        for row in reader:
            if None in row:
                errors.append(f"line {reader.line_num}: more values than columns")
                continue
            if not any((cell or "").strip() for cell in row.values()):
                continue  # a blank line
            line, row_errors = _csv_line(row, reader.line_num, today)
            errors += row_errors
            if line is not None:
                lines.append(line)
        if errors:
            more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
            raise BillingError("; ".join(errors[:20]) + more)
        if not lines:
            raise BillingError("the file has no lines")
    except UnicodeDecodeError:
        error = "the file is not UTF-8 text"
        _source_record(source, [], now, error=error)
        raise BillingError(error) from None
    except (BillingError, csv.Error) as exc:
        error = f"line {reader.line_num}: {exc}" if isinstance(exc, csv.Error) else str(exc)
        _source_record(source, [], now, error=error)
        raise BillingError(error) from None
    by_day: dict[date, list[BillLine]] = {}
    for line in lines:
        by_day.setdefault(line.day, []).append(line)
    with transaction.atomic():
        results = [_day_store(source, day, day_lines, now) for day, day_lines in sorted(by_day.items())]
    _source_record(source, results, now)
    return results
