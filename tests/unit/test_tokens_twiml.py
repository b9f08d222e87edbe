from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bot.call.stream_tokens import StreamTokens
from bot.call.web import twiml_dir
from bot.core.tokens import issue_stream_token, verify_stream_token
from bot.core.twiml import render_connect_stream

CALL = "CA" + "a" * 32


def test_token_round_trip_and_every_failure() -> None:
    token = issue_stream_token("secret", CALL, now=1000, ttl_s=60)
    assert verify_stream_token("secret", token, CALL, now=1059) is None
    assert verify_stream_token("secret", token, CALL, now=1061) == "stream token expired"
    assert "CallSid" in verify_stream_token("secret", token, "CA" + "b" * 32, now=1000)
    assert "CallSid" in verify_stream_token("other", token, CALL, now=1000)
    expires, mac = token.split(".")
    assert "CallSid" in verify_stream_token("secret", f"{int(expires) + 999}.{mac}", CALL, 1000)
    assert verify_stream_token("secret", None, CALL, 1000) == "missing stream token"
    assert verify_stream_token("secret", "garbage", CALL, 1000) == "malformed stream token"


def test_a_token_binds_every_parameter() -> None:
    params = {"from": "+15550100001", "instructions": "Be brief.", "var_name": "Ada"}
    token = issue_stream_token("secret", CALL, 1000, 60, params)
    assert verify_stream_token("secret", token, CALL, 1000, params) is None
    for changed in (
        {**params, "instructions": "Be evil."},
        {**params, "extra": "1"},
        {k: v for k, v in params.items() if k != "var_name"},
        {},
    ):
        assert "parameters" in (verify_stream_token("secret", token, CALL, 1000, changed) or "")


@pytest.mark.parametrize(
    "odd", ["²." + "a" * 43, "9" * 5000, "1.ü" + "a" * 42, "1." + "a" * 5000, "-1." + "a" * 43]
)
def test_odd_token_strings_are_malformed_not_a_crash(odd: str) -> None:
    assert verify_stream_token("secret", odd, CALL, 1000) == "malformed stream token"


def test_one_live_token_per_call_and_one_stream_per_token() -> None:
    now = [1000.0]
    tokens = StreamTokens("secret", ttl_s=60, clock=lambda: now[0], remember_s=3600)
    params = {"from": "+15550100001"}
    first = tokens.issue(CALL, params)
    assert first is not None
    assert tokens.issue(CALL, params) == first  # a replayed webhook: the same token
    assert tokens.verify(CALL, first, params) is None
    tokens.spend(CALL)
    assert tokens.verify(CALL, first, params) == "this call already had a stream"
    assert tokens.issue(CALL, params) is None  # no new token once the call had its stream
    now[0] += 3601  # forgotten after `remember_s`: the call log answers from then on
    assert tokens.issue(CALL, params) is not None


def test_a_newer_token_replaces_the_older_one() -> None:
    now = [1000.0]
    tokens = StreamTokens("secret", ttl_s=60, clock=lambda: now[0])
    older = tokens.issue(CALL, {"greeting": "Hi"})
    newer = tokens.issue(CALL, {"greeting": "Hello"})
    assert older and newer and older != newer
    assert tokens.verify(CALL, older, {"greeting": "Hi"}) == (
        "a newer stream token was issued for this call"
    )
    assert tokens.verify(CALL, newer, {"greeting": "Hello"}) is None


def test_the_ledger_is_bounded() -> None:
    tokens = StreamTokens("secret", ttl_s=60, capacity=10)
    for n in range(100):
        tokens.spend(f"CA{n:032d}")
        tokens.issue(f"CA{n + 1000:032d}", {})
    assert not tokens.was_streamed(f"CA{0:032d}") and tokens.was_streamed(f"CA{99:032d}")
    assert len(tokens._streamed) == 10 and len(tokens._issued) == 10


def test_twiml_connects_the_stream_then_falls_back() -> None:
    template = (twiml_dir() / "connect_stream.xml").read_text()
    xml = render_connect_stream(
        template,
        "wss://bot.example.com/twilio/media",
        {"token": "1.abc", "from": '+1555"<&>'},
        "Sorry & goodbye",
    )
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == ["Connect", "Say", "Hangup"]
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == "wss://bot.example.com/twilio/media"
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params == {"token": "1.abc", "from": '+1555"<&>'}
    assert root.findtext("Say") == "Sorry & goodbye"


def test_twiml_refuses_parameters_twilio_would_reject() -> None:
    with pytest.raises(ValueError, match="too long"):
        render_connect_stream("$stream_url $parameters $fallback", "wss://x", {"v": "x" * 500}, "")
