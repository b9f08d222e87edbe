"""A campaign against the fake Twilio REST API, with a clock the test controls."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import Settings
from bot.outbound.campaign import CampaignRunner
from bot.outbound.core.campaign import CampaignOptions, Policy, Window, parse_contacts, parse_dnc
from bot.outbound.core.request import Caller
from bot.store.store import Store
from bot.twilio_rest import TwilioRest
from tests.fake_twilio import FakeTwilio

ACCOUNT = "AC" + "6" * 32
TOKEN = "campaign-token-000000"
START = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)  # 10:00 New York, 00:00 Tokyo

CONTACTS = """phone,timezone,name
+15550000001,America/New_York,Ann
+15550000002,America/New_York,Bob
+15550000003,America/New_York,Cat
+15550000004,America/New_York,Dan
+15550000005,Asia/Tokyo,Eve
not-a-number,America/New_York,Fay
+15550000006,America/New_York,Gus
+15550000006,America/New_York,Gus again
+15550000007,America/New_York
"""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


class Stop(Exception):
    """Ends a run at a point of the test's choosing, as Ctrl-C would."""


CALLER = Caller("+15550009999", "https://bot.example.com", machine_detection=False)


async def test_a_stopped_campaign_resumes_and_calls_everyone_exactly_as_the_policy_says(
    database_settings: Settings,
) -> None:
    clock = Clock()
    created: list[tuple[str, dt.datetime]] = []
    tries: Counter[str] = Counter()

    def outcome(to: str) -> str:
        tries[to] += 1
        if to == "+15550000002":
            return "busy" if tries[to] == 1 else "completed"
        if to == "+15550000003":
            return "no-answer"
        return "completed"

    contacts, problems = parse_contacts(CONTACTS, "America/New_York")
    assert len(problems) == 3  # invalid number, duplicate, short row
    dnc = parse_dnc("+15550000004\n")
    options = CampaignOptions(
        "renewals",
        Policy(max_attempts=2, retry_after=dt.timedelta(minutes=10)),
        Window.parse("09:00-20:00"),
        concurrency=2,
        calls_per_second=5,
        poll_interval_s=3,
    )
    async with FakeTwilio(
        ACCOUNT,
        TOKEN,
        outcome=outcome,
        settle_s=0,
        on_create=lambda to: created.append((to, clock.now)),
    ) as twilio:
        store = await Store.open(database_settings.calllog.database)
        rest = TwilioRest(ACCOUNT, TOKEN, twilio.url)
        try:

            async def sleep_then_stop(seconds: float) -> None:
                clock.now += dt.timedelta(seconds=seconds)
                if len(created) >= 2:
                    raise Stop
                await asyncio.sleep(0)

            first = CampaignRunner(store, rest, CALLER, options, clock=clock, sleep=sleep_then_stop)
            assert await first.load(contacts, dnc) == 6
            with pytest.raises(Stop):
                await first.run()
            assert [to for to, _ in created] == ["+15550000001", "+15550000002"]

            async def sleep(seconds: float) -> None:
                clock.now += dt.timedelta(seconds=seconds)
                await asyncio.sleep(0)

            second = CampaignRunner(store, rest, CALLER, options, clock=clock, sleep=sleep)
            assert await second.load(contacts, dnc) == 0  # resuming: nothing new
            counts = await second.run()
            states = await store.campaigns.states("renewals")
        finally:
            await rest.close()
            await store.close()

    calls_per_number = Counter(to for to, _ in created)
    assert calls_per_number == {
        "+15550000001": 1,
        "+15550000002": 2,  # busy, then answered
        "+15550000003": 2,  # no answer twice: the policy's two attempts
        "+15550000005": 1,
        "+15550000006": 1,
    }
    assert counts == {"done": 4, "failed": 1, "skipped": 1}
    assert states["+15550000004"] == "skipped"  # do not call
    # Retries waited for their back-off.
    for number in ("+15550000002", "+15550000003"):
        first_try, second_try = [when for to, when in created if to == number]
        assert second_try - first_try >= dt.timedelta(minutes=10)
    # Tokyo was called in Tokyo's calling hours, not at its midnight.
    [(_, tokyo_at)] = [(to, when) for to, when in created if to == "+15550000005"]
    assert 9 <= tokyo_at.astimezone(ZoneInfo("Asia/Tokyo")).hour < 20
    assert tokyo_at >= dt.datetime(2026, 11, 21, 0, 0, tzinfo=dt.UTC)
    # The concurrency cap held: never more than two calls up at once.
    assert twilio.max_in_flight == 2


async def test_a_contact_left_mid_placement_is_flagged_not_redialled(
    database_settings: Settings,
) -> None:
    contacts, _ = parse_contacts("phone\n+15550000001\n", "America/New_York")
    async with FakeTwilio(ACCOUNT, TOKEN, settle_s=0) as twilio:
        store = await Store.open(database_settings.calllog.database)
        rest = TwilioRest(ACCOUNT, TOKEN, twilio.url)
        try:
            clock = Clock()
            runner = CampaignRunner(store, rest, CALLER, CampaignOptions("x"), clock=clock)
            await runner.load(contacts, frozenset())
            # A run that died after claiming the contact, before Twilio answered with a CallSid.
            [contact] = await store.campaigns.due("x", clock())
            assert await store.campaigns.claim(contact["id"], clock())
            counts = await runner.run()
        finally:
            await rest.close()
            await store.close()
    assert counts == {"unknown": 1}
    assert not twilio.requests


async def test_dry_run_and_bad_rows_from_the_command_line(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CONTACTS)
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("+15550000004\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "campaign",
        "run",
        str(contacts),
        "--dry-run",
        "--dnc",
        str(dnc),
        env={"BOT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = (part.decode() for part in await asyncio.wait_for(process.communicate(), 60))
    assert process.returncode == 0, err
    assert "line 7: 'not-a-number' is not an E.164 number" in err
    assert "line 9: +15550000006 appears twice" in err
    assert "line 10: 2 fields, the header has 3" in err
    assert re.search(r"^\+15550000004 +America/New_York +skip: on the do-not-call list$", out, re.M)
    assert len(out.splitlines()) == 7  # six contacts and the summary
    assert "dry run of contacts: 6 contact(s); nobody was called" in out


async def test_past_the_global_cap_a_campaign_waits_for_a_free_slot(postgres_url: str) -> None:
    """Instances sharing PostgreSQL have one live call between them and MAX_CALLS_TOTAL is
    1: the campaign places nothing until that call ends, then calls everyone."""
    contacts, _ = parse_contacts("phone\n+15550000001\n+15550000002\n", "America/New_York")
    async with FakeTwilio(ACCOUNT, TOKEN, settle_s=0) as twilio:
        store = await Store.open(postgres_url.replace("postgresql://", "postgresql+asyncpg://"))
        rest = TwilioRest(ACCOUNT, TOKEN, twilio.url)
        clock = Clock()
        busy = "CA" + "e" * 32
        assert await store.cluster.reserve(busy, "elsewhere", 1, 300, dt.datetime.now(dt.UTC))
        placed_while_busy: list[int] = []

        async def sleep(seconds: float) -> None:
            clock.now += dt.timedelta(seconds=max(seconds, 1))
            if runner.waiting_for_slot and busy:
                placed_while_busy.append(len(twilio.of("POST", "Calls.json")))
                await store.cluster.forget(busy)  # the other call ends

        try:
            options = CampaignOptions("capped", concurrency=2, poll_interval_s=1)
            runner = CampaignRunner(
                store, rest, CALLER, options, clock=clock, sleep=sleep, max_calls_total=1
            )
            await runner.load(contacts, frozenset())
            counts = await runner.run()
            live = await store.cluster.live_count()
        finally:
            await rest.close()
            await store.close()
    assert runner.waiting_for_slot >= 1
    assert placed_while_busy[0] == 0  # nothing was placed while the slot was taken
    assert counts == {"done": 2}
    assert len(twilio.of("POST", "Calls.json")) == 2
    assert live == 0  # every slot was given back
