"""Campaign rules, free of I/O: reading the contact list, calling hours, what happens after
a call. The runner (`bot/campaign.py`) applies them to state kept in the database.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core.ids import is_e164

__all__ = [
    "CampaignOptions",
    "Contact",
    "Outcome",
    "Policy",
    "Window",
    "after_call",
    "parse_contacts",
    "parse_dnc",
    "plan",
]

RETRYABLE: Final = frozenset({"busy", "no-answer", "failed"})
FINAL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


@dataclass(frozen=True)
class Contact:
    line: int
    phone: str
    timezone: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """Calling hours, in the callee's local time."""

    start: dt.time = dt.time(9, 0)
    end: dt.time = dt.time(20, 0)

    @classmethod
    def parse(cls, text: str) -> Window:
        """`09:00-20:00`."""
        start, sep, end = text.partition("-")
        if not sep:
            raise ValueError(f"calling hours must look like 09:00-20:00, got {text!r}")
        window = cls(dt.time.fromisoformat(start.strip()), dt.time.fromisoformat(end.strip()))
        if window.start >= window.end:
            raise ValueError("calling hours must start before they end, on the same day")
        return window

    def open_at(self, now: dt.datetime, timezone: str) -> bool:
        local = now.astimezone(ZoneInfo(timezone)).time()
        return self.start <= local < self.end

    def next_open(self, now: dt.datetime, timezone: str) -> dt.datetime:
        """The next moment (UTC) calling is allowed; `now` if it already is."""
        zone = ZoneInfo(timezone)
        local = now.astimezone(zone)
        if self.start <= local.time() < self.end:
            return now
        day = local.date() if local.time() < self.start else local.date() + dt.timedelta(days=1)
        return dt.datetime.combine(day, self.start, zone).astimezone(dt.UTC)


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    retry_after: dt.timedelta = dt.timedelta(minutes=30)  # doubled after each failed try


@dataclass(frozen=True)
class CampaignOptions:
    """How a campaign runs; its name is how a stopped run is resumed."""

    name: str
    policy: Policy = Policy()
    window: Window = Window()
    concurrency: int = 2
    calls_per_second: float = 1.0
    poll_interval_s: float = 3.0
    instructions: str | None = None
    greeting: str | None = None
    turn_taking: Mapping[str, str] = field(default_factory=dict)  # for every call


@dataclass(frozen=True)
class Outcome:
    state: str  # done | retry | failed
    next_attempt_at: dt.datetime | None
    note: str


def after_call(status: str, attempts: int, now: dt.datetime, policy: Policy) -> Outcome:
    """What a contact becomes once its call has a final Twilio status."""
    if status == "completed":
        return Outcome("done", None, "answered")
    if status in RETRYABLE and attempts < policy.max_attempts:
        wait = policy.retry_after * (2 ** (attempts - 1))
        return Outcome("retry", now + wait, f"{status}; try {attempts + 1} after {wait}")
    return Outcome("failed", None, f"{status} after {attempts} attempt(s)")


def parse_contacts(text: str, default_timezone: str) -> tuple[list[Contact], list[str]]:
    """Contacts from CSV with a `phone` column; `timezone` optional; other columns are variables.

    Returns the usable contacts and one problem per rejected row (the rest go on).
    """
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return [], ["the file is empty"]
    if "phone" not in header:
        return [], ["the first line must name the columns, one of them `phone`"]
    contacts: list[Contact] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} fields, the header has {len(header)}")
            continue
        values = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        phone = values.pop("phone").replace(" ", "")
        timezone = values.pop("timezone", "") or default_timezone
        if not is_e164(phone):
            problems.append(f"line {line}: {phone!r} is not an E.164 number like +15551234567")
            continue
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"line {line}: unknown time zone {timezone!r}")
            continue
        if phone in seen:
            problems.append(f"line {line}: {phone} appears twice; called once")
            continue
        seen.add(phone)
        contacts.append(Contact(line, phone, timezone, {k: v for k, v in values.items() if v}))
    return contacts, problems


def parse_dnc(text: str) -> frozenset[str]:
    """A do-not-call list: one number per line; `#` starts a comment."""
    numbers = (line.split("#", 1)[0].strip().replace(" ", "") for line in text.splitlines())
    return frozenset(number for number in numbers if number)


def plan(
    contacts: list[Contact],
    dnc: frozenset[str],
    states: dict[str, str],
    window: Window,
    now: dt.datetime,
) -> list[tuple[Contact, str]]:
    """What a run would do with each contact right now (for `--dry-run`)."""
    actions = []
    for contact in contacts:
        state = states.get(contact.phone)
        if contact.phone in dnc:
            action = "skip: on the do-not-call list"
        elif state not in (None, "pending", "retry"):
            action = f"nothing: already {state}"
        elif window.open_at(now, contact.timezone):
            action = "call now"
        else:
            opens = window.next_open(now, contact.timezone)
            local = opens.astimezone(ZoneInfo(contact.timezone))
            action = f"wait until {local:%a %H:%M} {contact.timezone} ({opens:%Y-%m-%d %H:%M} UTC)"
        actions.append((contact, action))
    return actions
