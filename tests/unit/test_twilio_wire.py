from __future__ import annotations

import base64
import json

import pytest

from bot.core import twilio as tw
from bot.errors import TwilioProtocolError

SID = "MZ" + "0" * 32


def test_parses_every_event_twilio_sends() -> None:
    start = tw.decode(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC" + "1" * 32,
                    "streamSid": SID,
                    "callSid": "CA" + "2" * 32,
                    "tracks": ["inbound"],
                    "customParameters": {"token": "t"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": SID,
            }
        )
    )
    assert start == tw.TwilioStart(SID, "CA" + "2" * 32, "AC" + "1" * 32, {"token": "t"})
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = tw.decode(
        json.dumps({"event": "media", "media": {"payload": payload, "timestamp": "40"}})
    )
    assert media == tw.TwilioMedia(b"\xff" * 160, 40, None)  # a frame with no track says none
    assert tw.decode(
        '{"event":"media","media":{"track":"outbound","payload":"","timestamp":7}}'
    ) == tw.TwilioMedia(b"", 7, "outbound")
    assert tw.decode('{"event":"mark","mark":{"name":"m1"}}') == tw.TwilioMark("m1")
    assert tw.decode('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"#"}}') == (
        tw.TwilioDtmf("#")
    )
    assert tw.decode('{"event":"stop","stop":{"callSid":"CA1"}}') == tw.TwilioStop("CA1")
    assert tw.decode('{"event":"connected","protocol":"Call"}') == tw.TwilioConnected("Call")


def test_unknown_events_are_ignored() -> None:
    assert tw.decode('{"event":"something-new","x":1}') is None


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        "{}",
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"@@@@"}}',
        '{"event":"media","media":{"payload":"AAAA","timestamp":"soon"}}',
        '{"event":"media","media":{"payload":"AAAA","timestamp":true}}',
        '{"event":"mark","mark":{}}',
        '{"event":"dtmf","dtmf":{"digit":"12"}}',
        '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA 1","accountSid":"AC1"}}',
        '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","accountSid":"AC1",'
        '"customParameters":{"a":1}}}',
        b'{"event":"media"}',
        '{"event":"media","media":{"payload":"' + "A" * 70000 + '"}}',
    ],
)
def test_malformed_frames_raise_a_protocol_error(frame: str | bytes) -> None:
    with pytest.raises(TwilioProtocolError):
        tw.decode(frame)


def test_outbound_messages_have_exactly_twilios_fields() -> None:
    assert json.loads(tw.encode(tw.OutboundMedia(SID, b"\xff\xff"))) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "//8="},
    }
    assert json.loads(tw.encode(tw.OutboundMark(SID, "m7"))) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m7"},
    }
    assert json.loads(tw.encode(tw.OutboundClear(SID))) == {"event": "clear", "streamSid": SID}


@pytest.mark.parametrize(
    "message",
    [tw.OutboundMedia(SID, bytes(range(160))), tw.OutboundMark(SID, "m1"), tw.OutboundClear(SID)],
)
def test_the_phone_reads_what_the_bridge_sent(message: tw.TwilioMessage) -> None:
    assert tw.decode_outbound(tw.encode(message)) == message


def test_the_phones_frames_are_what_the_bridge_reads() -> None:
    call, account = "CA" + "2" * 32, "AC" + "1" * 32
    start = tw.decode(tw.phone_start(SID, call, account, {"token": "t"}))
    assert start == tw.TwilioStart(SID, call, account, {"token": "t"})
    both = tw.decode(tw.phone_start(SID, call, account, {}, tracks=("inbound", "outbound")))
    assert isinstance(both, tw.TwilioStart) and both.tracks == ("inbound", "outbound")
    untracked = tw.decode(tw.phone_media(SID, b"\x01" * 160, 3, track=None))
    assert isinstance(untracked, tw.TwilioMedia) and untracked.track is None
    assert tw.decode(tw.phone_media(SID, b"\x01" * 160, 3)) == tw.TwilioMedia(b"\x01" * 160, 60)
    assert tw.decode(tw.phone_mark(SID, "m9", 5)) == tw.TwilioMark("m9")
    assert tw.decode(tw.phone_dtmf(SID, "7", 6)) == tw.TwilioDtmf("7")
    assert tw.decode(tw.phone_stop(SID, call, account, 7)) == tw.TwilioStop(call)
    assert tw.decode(tw.phone_connected()) == tw.TwilioConnected("Call")
