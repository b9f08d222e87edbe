from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

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
