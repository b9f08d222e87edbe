from __future__ import annotations

import datetime as dt

import pytest

from bot.outbound.core.campaign import Policy, Window, after_call, parse_contacts, parse_dnc, plan

CSV = """phone,timezone,name,time
+15550000001,America/New_York,Ann,3 pm
+1 555 000 0002,,Bob,
555-0003,America/New_York,Cat,
+15550000004,Mars/Olympus,Dan,
+15550000001,America/New_York,Ann again,
+15550000005,Europe/Paris

"""


def test_contacts_are_checked_row_by_row() -> None:
    contacts, problems = parse_contacts(CSV, "America/Chicago")
    assert [(c.line, c.phone, c.timezone, c.variables) for c in contacts] == [
        (2, "+15550000001", "America/New_York", {"name": "Ann", "time": "3 pm"}),
        (3, "+15550000002", "America/Chicago", {"name": "Bob"}),
    ]
    assert problems == [
        "line 4: '555-0003' is not an E.164 number like +15551234567",
        "line 5: unknown time zone 'Mars/Olympus'",
        "line 6: +15550000001 appears twice; called once",
        "line 7: 2 fields, the header has 4",
    ]
    assert parse_contacts("name\nAnn\n", "UTC") == (
        [],
        ["the first line must name the columns, one of them `phone`"],
    )
    assert parse_contacts("", "UTC") == ([], ["the file is empty"])


def test_do_not_call_lists_allow_comments() -> None:
    assert parse_dnc("+15550000001  # asked us\n\n# header\n+1 555 000 0002\n") == {
        "+15550000001",
        "+15550000002",
    }


def test_calling_hours_are_local_to_the_callee() -> None:
    window = Window.parse("09:00-20:00")
    now = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)  # 10:00 in New York, 00:00 in Tokyo
    assert window.open_at(now, "America/New_York")
    assert not window.open_at(now, "Asia/Tokyo")
    assert window.next_open(now, "America/New_York") == now
    assert window.next_open(now, "Asia/Tokyo") == dt.datetime(2026, 11, 21, 0, 0, tzinfo=dt.UTC)
    late = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.UTC)  # 21:00 in New York
    assert window.next_open(late, "America/New_York") == dt.datetime(
        2026, 11, 21, 14, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ValueError):
        Window.parse("20:00-09:00")
    with pytest.raises(ValueError):
        Window.parse("9 to 5")


def test_retries_back_off_and_stop() -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    policy = Policy(max_attempts=3, retry_after=dt.timedelta(minutes=30))
    assert after_call("completed", 1, now, policy).state == "done"
    first = after_call("busy", 1, now, policy)
    assert (first.state, first.next_attempt_at) == ("retry", now + dt.timedelta(minutes=30))
    assert after_call("no-answer", 2, now, policy).next_attempt_at == now + dt.timedelta(hours=1)
    assert after_call("failed", 3, now, policy).state == "failed"
    assert after_call("canceled", 1, now, policy).state == "failed"


def test_a_dry_run_plan() -> None:
    contacts, _ = parse_contacts(CSV, "Asia/Tokyo")
    now = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)
    actions = [
        action for _, action in plan(contacts, frozenset({"+15550000001"}), {}, Window(), now)
    ]
    assert actions == [
        "skip: on the do-not-call list",
        "wait until Sat 09:00 Asia/Tokyo (2026-11-21 00:00 UTC)",
    ]
    done = plan(contacts, frozenset(), {"+15550000002": "done"}, Window(), now)
    assert done[1][1] == "nothing: already done"


def test_an_outbound_calls_turn_taking_travels_in_its_webhook_url() -> None:
    from urllib.parse import parse_qs, urlsplit

    from bot.outbound.core.request import Caller, OutboundCall, call_request

    caller = Caller("+15550000000", "https://bot.example.com")
    chosen = {"turn_detection": "semantic_vad", "vad_eagerness": "low"}
    request = call_request(caller, OutboundCall("+15551234567", turn_taking=chosen))
    query = parse_qs(urlsplit(request["url"]).query)
    assert query["turn_detection"] == ["semantic_vad"] and query["vad_eagerness"] == ["low"]
    for wrong in ({"turn_detection": "eager"}, {"noise_reduction": "loud"}, {"barge_in": "x"}):
        with pytest.raises(ValueError):
            call_request(caller, OutboundCall("+15551234567", turn_taking=wrong))
