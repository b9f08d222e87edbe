"""Placing outbound calls: the Twilio request, and the call's first row in the call log.

Per-call variables, instructions and greeting travel in the (signed) voice webhook URL;
the webhook turns them into `<Parameter>`s of the stream, which shape the bot's
instructions. Twilio's asynchronous answering-machine detection runs alongside; the
bridge holds the greeting until it reports a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

from bot.config import Settings
from bot.sansio.numbers import is_e164
from bot.sansio.twiml import MAX_PARAMETER_CHARS
from bot.storage import CallStore, LogBatch, utcnow
from bot.twilio_rest import TwilioRest

__all__ = ["OutboundCall", "call_request", "outbound_problems", "place_call"]

STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True)
class OutboundCall:
    to: str
    variables: Mapping[str, str] = field(default_factory=dict)
    instructions: str | None = None
    greeting: str | None = None
    campaign: str | None = None


def outbound_problems(settings: Settings) -> list[str]:
    """What is missing to place calls, in words a user can act on."""
    problems = []
    if not settings.twilio_account_sid:
        problems.append("TWILIO_ACCOUNT_SID is required to place calls")
    if settings.twilio_auth_token is None:
        problems.append("TWILIO_AUTH_TOKEN is required to place calls")
    if not settings.twilio_from_number:
        problems.append("TWILIO_FROM_NUMBER (the caller ID, E.164) is required to place calls")
    if settings.public_url is None:
        problems.append("PUBLIC_URL is required: Twilio fetches the call's TwiML from it")
    return problems


def call_request(settings: Settings, call: OutboundCall) -> dict[str, Any]:
    """Keyword arguments for twilio-python's `calls.create`.

    Raises:
        ValueError: a number is not E.164, or a parameter is too long for Twilio.
    """
    if not is_e164(call.to):
        raise ValueError(f"{call.to!r} is not an E.164 number such as +15551234567")
    query: dict[str, str] = {f"var_{name}": value for name, value in call.variables.items()}
    for name, value in (
        ("instructions", call.instructions),
        ("greeting", call.greeting),
        ("campaign", call.campaign),
    ):
        if value:
            query[name] = value
    if settings.machine_detection:
        query["amd"] = "1"
    for name, value in query.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"variable name {name!r} must be letters, digits and _")
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise ValueError(f"{name} is too long for a Twilio stream parameter")
    base = settings.public_url
    assert base is not None
    params: dict[str, Any] = {
        "to": call.to,
        "from_": settings.twilio_from_number,
        "url": f"{base}/twilio/voice" + (f"?{urlencode(query)}" if query else ""),
        "method": "POST",
        "status_callback": f"{base}/twilio/status",
        "status_callback_method": "POST",
        "status_callback_event": list(STATUS_EVENTS),
    }
    if settings.machine_detection:
        params.update(
            machine_detection="DetectMessageEnd",  # the verdict comes after the beep
            async_amd="true",
            async_amd_status_callback=f"{base}/twilio/amd",
            async_amd_status_callback_method="POST",
        )
    return params


async def place_call(
    settings: Settings, rest: TwilioRest, store: CallStore, call: OutboundCall
) -> str:
    """Place the call and log it at once (calls nobody answers never reach the webhook)."""
    call_sid = await rest.create_call(**call_request(settings, call))
    batch = LogBatch()
    batch.calls.append(
        (
            call_sid,
            {
                "direction": "outbound-api",
                "from_number": settings.twilio_from_number,
                "to_number": call.to,
                "started_at": utcnow(),
                "twilio_status": "queued",
            },
        )
    )
    await store.write(batch)
    return call_sid
