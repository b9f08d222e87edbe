"""Twilio Media Streams messages, both ways, with the phone's side for simulators and tests.

See shared/reference/protocols.md A2. Twilio sends `connected`, `start`, `media`, `mark`,
`dtmf` and `stop`; a bidirectional stream accepts only `media`, `mark` and `clear` back,
with no extra fields. `decode` and `encode` are the bridge's side; `phone_*` build the
frames Twilio sends and `decode_outbound` reads what the bridge sent, for the simulator.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, assert_never

import pybase64

from bot.core.fields import FieldReader
from bot.core.frozen import statically_frozen
from bot.core.ids import is_sid
from bot.errors import TwilioProtocolError

__all__ = [
    "BINARY_FRAME",
    "MAX_FRAME_CHARS",
    "OutboundClear",
    "OutboundMark",
    "OutboundMedia",
    "TwilioConnected",
    "TwilioDtmf",
    "TwilioEvent",
    "TwilioMark",
    "TwilioMedia",
    "TwilioMessage",
    "TwilioStart",
    "TwilioStop",
    "decode",
    "decode_outbound",
    "encode",
    "phone_connected",
    "phone_dtmf",
    "phone_mark",
    "phone_media",
    "phone_start",
    "phone_stop",
]

# 20 ms frames are 216 base64 chars; a whole second of μ-law in one frame is ~11 kB.
# Anything far beyond that is not Twilio.
MAX_FRAME_CHARS: Final = 64 * 1024
BINARY_FRAME: Final = "binary frame (Media Streams sends JSON text)"
_DTMF_DIGITS: Final = frozenset("0123456789*#ABCDabcdw")
_fields: Final = FieldReader(TwilioProtocolError)


# ---- from Twilio ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwilioConnected:
    protocol: str


@dataclass(frozen=True, slots=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)  # both_tracks forks: ("inbound", "outbound")


@statically_frozen  # made for every frame: see bot/core/frozen.py
class TwilioMedia:
    """Audio of one track: `inbound` is the caller, `outbound` what the caller hears (the
    person a fork's `<Dial>` reached). `timestamp_ms` counts from the start of the stream;
    `track` is None when the frame does not say."""

    ulaw: bytes
    timestamp_ms: int | None
    track: str | None = "inbound"


@statically_frozen  # made for every frame: see bot/core/frozen.py
class TwilioMark:
    """Twilio played everything sent before the mark named `name` (or a `clear` flushed it)."""

    name: str


@dataclass(frozen=True, slots=True)
class TwilioDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class TwilioStop:
    call_sid: str | None


TwilioEvent = TwilioConnected | TwilioStart | TwilioMedia | TwilioMark | TwilioDtmf | TwilioStop


def decode(text: str | bytes) -> TwilioEvent | None:
    """One text frame from Twilio (as `bytes`: its UTF-8 payload); None for an event type
    this bridge does not use. A binary frame is the channel's to refuse (`BINARY_FRAME`).

    Raises:
        TwilioProtocolError: the frame is oversized, not JSON, or a known event with
            missing or ill-typed fields.
    """
    if len(text) > MAX_FRAME_CHARS:
        raise TwilioProtocolError(f"oversized frame ({len(text)} chars)")
    message = _fields.decode(text, "frame")
    event = message.get("event")
    # `media` first: it is 50 frames a second; everything else is rare.
    if event == "media":
        media = _fields.obj(message, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise TwilioProtocolError("media.payload missing")
        try:
            ulaw = pybase64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise TwilioProtocolError("media.payload is not base64") from exc
        track = media.get("track")
        stamp = media.get("timestamp")
        return TwilioMedia(
            ulaw,
            # Twilio writes the number as a string of digits; anything else is checked.
            int(stamp)
            if type(stamp) is str and stamp.isascii() and stamp.isdigit() and len(stamp) < 16
            else _fields.optional_numeric(media, "timestamp"),
            track[:16] if isinstance(track, str) else None,
        )
    if event == "mark":
        return TwilioMark(_fields.string(_fields.obj(message, "mark"), "name"))
    if event == "start":
        start = _fields.obj(message, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(
            isinstance(value, str) for value in params.values()
        ):
            raise TwilioProtocolError("start.customParameters must map names to strings")
        tracks = start.get("tracks")
        return TwilioStart(
            stream_sid=_sid(start, "streamSid"),
            call_sid=_sid(start, "callSid"),
            account_sid=_sid(start, "accountSid"),
            custom_parameters=params,
            tracks=tuple(t[:16] for t in tracks[:4] if isinstance(t, str))
            if isinstance(tracks, list)
            else ("inbound",),
        )
    if event == "connected":
        return TwilioConnected(str(message.get("protocol", "")))
    if event == "dtmf":
        digit = _fields.string(_fields.obj(message, "dtmf"), "digit")
        if len(digit) != 1 or digit not in _DTMF_DIGITS:
            raise TwilioProtocolError("dtmf.digit is not a DTMF digit")
        return TwilioDtmf(digit)
    if event == "stop":
        stop = message.get("stop")
        call_sid = stop.get("callSid") if isinstance(stop, dict) else None
        return TwilioStop(call_sid if isinstance(call_sid, str) else None)
    if not isinstance(event, str):
        raise TwilioProtocolError("frame has no event")
    return None


def _sid(obj: dict[str, object], key: str) -> str:
    value = _fields.string(obj, key)
    if not is_sid(value):
        raise TwilioProtocolError(f"{key} is not a Twilio sid")
    return value


# ---- to Twilio -----------------------------------------------------------------------------


@statically_frozen  # made for every frame: see bot/core/frozen.py
class OutboundMedia:
    stream_sid: str
    ulaw: bytes


@statically_frozen  # made for every frame: see bot/core/frozen.py
class OutboundMark:
    """Asks Twilio to say when everything sent before it has played."""

    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    """Drops every queued byte at Twilio; pending marks come back at once."""

    stream_sid: str


TwilioMessage = OutboundMedia | OutboundMark | OutboundClear


def encode(message: TwilioMessage) -> str:
    """Built by hand: sids are alphanumeric (checked at `start`), mark names are ours
    (`m<number>`) and base64 needs no JSON escaping."""
    match message:
        case OutboundMedia(stream_sid, ulaw):
            payload = pybase64.b64encode_as_string(ulaw)
            return (
                '{"event":"media","streamSid":"'
                + stream_sid
                + '","media":{"payload":"'
                + payload
                + '"}}'
            )
        case OutboundMark(stream_sid, name):
            return (
                '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"' + name + '"}}'
            )
        case OutboundClear(stream_sid):
            return '{"event":"clear","streamSid":"' + stream_sid + '"}'
        case _:
            assert_never(message)


# ---- the phone's side: what Twilio sends, and reading what the bridge sent ------------------


def phone_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def phone_start(
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    parameters: Mapping[str, str],
    sequence: int = 1,
    tracks: tuple[str, ...] = ("inbound",),
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": dict(parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )


def phone_media(
    stream_sid: str,
    ulaw: bytes,
    index: int,
    sequence: int | None = None,
    track: str | None = "inbound",
) -> str:
    """Audio frame number `index` (from 0) of a track of a stream: 20 ms each (`track`
    None: a frame that does not say, which Twilio never sends)."""
    media = {
        "track": track,
        "chunk": str(index + 1),
        "timestamp": str(index * 20),
        "payload": pybase64.b64encode_as_string(ulaw),
    }
    if track is None:
        del media["track"]
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence if sequence is not None else index + 2),
            "media": media,
            "streamSid": stream_sid,
        }
    )


def phone_mark(stream_sid: str, name: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def phone_dtmf(stream_sid: str, digit: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def phone_stop(stream_sid: str, call_sid: str, account_sid: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )


def decode_outbound(text: str | bytes) -> TwilioMessage:
    """What the bridge sent to Twilio, as Twilio would read it.

    Raises:
        TwilioProtocolError: not a message a bidirectional stream accepts.
    """
    message = _fields.decode(text, "message")
    stream_sid = _fields.string(message, "streamSid")
    event = message.get("event")
    if event == "media":
        payload = _fields.string(_fields.obj(message, "media"), "payload")
        try:
            return OutboundMedia(stream_sid, pybase64.b64decode(payload, validate=True))
        except binascii.Error as exc:
            raise TwilioProtocolError("media.payload is not base64") from exc
    if event == "mark":
        return OutboundMark(stream_sid, _fields.string(_fields.obj(message, "mark"), "name"))
    if event == "clear":
        return OutboundClear(stream_sid)
    raise TwilioProtocolError(f"a stream does not accept {event!r}")
