"""Twilio Media Streams wire format: parse inbound frames, serialize outbound ones.

See shared/reference/protocols.md A2. Twilio sends `connected`, `start`, `media`, `mark`,
`dtmf` and `stop`; a bidirectional stream accepts only `media`, `mark` and `clear` back,
with no extra fields.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from bot.errors import TwilioProtocolError

__all__ = [
    "MAX_FRAME_CHARS",
    "TwilioConnected",
    "TwilioDtmf",
    "TwilioEvent",
    "TwilioMark",
    "TwilioMedia",
    "TwilioStart",
    "TwilioStop",
    "parse",
    "serialize_clear",
    "serialize_mark",
    "serialize_media",
]

# 20 ms frames are 216 base64 chars; a whole second of μ-law in one frame is ~11 kB.
# Anything far beyond that is not Twilio.
MAX_FRAME_CHARS: Final = 64 * 1024
_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")


@dataclass(frozen=True, slots=True)
class TwilioConnected:
    protocol: str


@dataclass(frozen=True, slots=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwilioMedia:
    """Caller audio. `timestamp_ms` counts from the start of the stream."""

    ulaw: bytes
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
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


def parse(text: str | bytes) -> TwilioEvent | None:
    """Parse one frame from Twilio.

    Returns None for an event type this bridge does not use (Twilio may add some).

    Raises:
        TwilioProtocolError: the frame is binary, oversized, not JSON, or a known event
            with missing or ill-typed fields.
    """
    if not isinstance(text, str):
        raise TwilioProtocolError("binary frame (Media Streams sends JSON text)")
    if len(text) > MAX_FRAME_CHARS:
        raise TwilioProtocolError(f"oversized frame ({len(text)} chars)")
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise TwilioProtocolError("frame is not JSON") from exc
    if not isinstance(message, dict):
        raise TwilioProtocolError("frame is not a JSON object")
    event = message.get("event")
    # `media` first: it is 50 frames a second; everything else is rare.
    if event == "media":
        media = _object(message, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise TwilioProtocolError("media.payload missing")
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise TwilioProtocolError("media.payload is not base64") from exc
        return TwilioMedia(ulaw, _optional_int(media, "timestamp"))
    if event == "mark":
        return TwilioMark(_string(_object(message, "mark"), "name"))
    if event == "start":
        start = _object(message, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(
            isinstance(value, str) for value in params.values()
        ):
            raise TwilioProtocolError("start.customParameters must map names to strings")
        return TwilioStart(
            stream_sid=_sid(start, "streamSid"),
            call_sid=_sid(start, "callSid"),
            account_sid=_sid(start, "accountSid"),
            custom_parameters=params,
        )
    if event == "connected":
        return TwilioConnected(str(message.get("protocol", "")))
    if event == "dtmf":
        digit = _string(_object(message, "dtmf"), "digit")
        if len(digit) != 1 or digit not in "0123456789*#ABCDabcdw":
            raise TwilioProtocolError("dtmf.digit is not a DTMF digit")
        return TwilioDtmf(digit)
    if event == "stop":
        stop = message.get("stop")
        call_sid = stop.get("callSid") if isinstance(stop, dict) else None
        return TwilioStop(call_sid if isinstance(call_sid, str) else None)
    if not isinstance(event, str):
        raise TwilioProtocolError("frame has no event")
    return None


def serialize_media(stream_sid: str, ulaw_b64: str) -> str:
    """A `media` message, built by hand: sids are alphanumeric and base64 needs no escaping."""
    return (
        '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + ulaw_b64 + '"}}'
    )


def serialize_mark(stream_sid: str, name: str) -> str:
    """A `mark` message. Names are ours (`m<number>`), so they need no escaping either."""
    return '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"' + name + '"}}'


def serialize_clear(stream_sid: str) -> str:
    return '{"event":"clear","streamSid":"' + stream_sid + '"}'


def _object(message: dict[str, object], key: str) -> dict[str, object]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{key} must be an object")
    return value


def _string(obj: dict[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{key} must be a string")
    return value


def _sid(obj: dict[str, object], key: str) -> str:
    value = _string(obj, key)
    if not _SID.match(value):
        raise TwilioProtocolError(f"{key} is not a Twilio sid")
    return value


def _optional_int(obj: dict[str, object], key: str) -> int | None:
    # Twilio sends numbers as JSON strings ("5"); some clones send numbers.
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TwilioProtocolError(f"{key} must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise TwilioProtocolError(f"{key} must be an integer") from exc
