"""Hand-driven Twilio side for tests that need to misbehave (the simulator is well-behaved)."""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET

import aiohttp
from twilio.request_validator import RequestValidator

from bot.core import twilio


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


async def fetch_twiml(
    app_url: str,
    secret: str | None,
    call_sid: str,
    *,
    signature: str | None = None,
    form: dict[str, str] | None = None,
) -> tuple[int, str]:
    url = app_url + "/twilio/voice"
    params = {"CallSid": call_sid, "From": "+15550100001", "To": "+15550100002", **(form or {})}
    headers = {}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    elif secret is not None:
        headers["X-Twilio-Signature"] = RequestValidator(secret).compute_signature(url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params, headers=headers) as response:
            return response.status, await response.text()


def stream_parameters(twiml: str) -> tuple[str, dict[str, str]]:
    document = ET.fromstring(twiml)
    stream = document.find("./Connect/Stream")
    if stream is None:
        stream = document.find("./Start/Stream")  # a listened call's fork
    assert stream is not None
    return stream.attrib["url"], {
        p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")
    }


def start_frame(
    call_sid: str,
    params: dict[str, str],
    stream_sid: str | None = None,
    account_sid: str | None = None,
) -> str:
    return twilio.phone_start(
        stream_sid or "MZ" + secrets.token_hex(16), call_sid, account_sid or "AC" + "0" * 32, params
    )


def media_frame(ulaw: bytes, index: int = 0) -> str:
    return twilio.phone_media("MZ" + "0" * 32, ulaw, index)


def media_at(ulaw: bytes, timestamp: int | str) -> str:
    """A media frame with any timestamp at all, as a hostile peer would send it."""
    frame = json.loads(media_frame(ulaw))
    frame["media"]["timestamp"] = str(timestamp)
    return json.dumps(frame)
