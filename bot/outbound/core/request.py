"""The Twilio request that places an outbound call, built from the call and from us.

Per-call variables, instructions and greeting travel in the (signed) voice webhook URL;
the webhook turns them into `<Parameter>`s of the stream, which shape the bot's
instructions. Twilio's asynchronous answering-machine detection runs alongside; the call
holds the greeting until it reports a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

from bot.core.ids import is_e164
from bot.core.turn_taking import TURN_PARAMETERS, turn_parameter_problems
from bot.core.twiml import MAX_PARAMETER_CHARS

__all__ = ["Caller", "OutboundCall", "call_request"]

STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True)
class OutboundCall:
    to: str
    variables: Mapping[str, str] = field(default_factory=dict)
    instructions: str | None = None
    greeting: str | None = None
    campaign: str | None = None
    # The call's own turn detection and noise reduction (see bot.core.turn_taking).
    turn_taking: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """Who places the calls: our number, where Twilio finds our TwiML, and how we answer."""

    from_number: str
    base_url: str
    machine_detection: bool = True


def call_request(caller: Caller, call: OutboundCall) -> dict[str, Any]:
    """Keyword arguments for twilio-python's `calls.create`.

    Raises:
        ValueError: a number is not E.164, or a parameter is too long for Twilio.
    """
    if not is_e164(call.to):
        raise ValueError(f"{call.to!r} is not an E.164 number such as +15551234567")
    problems = turn_parameter_problems(call.turn_taking)
    unknown = set(call.turn_taking) - set(TURN_PARAMETERS)
    if problems or unknown:
        raise ValueError("; ".join(problems) or f"unknown turn-taking settings {sorted(unknown)}")
    query: dict[str, str] = {f"var_{name}": value for name, value in call.variables.items()}
    query.update(call.turn_taking)
    for name, value in (
        ("instructions", call.instructions),
        ("greeting", call.greeting),
        ("campaign", call.campaign),
    ):
        if value:
            query[name] = value
    if caller.machine_detection:
        query["amd"] = "1"
    for name, value in query.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"variable name {name!r} must be letters, digits and _")
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise ValueError(f"{name} is too long for a Twilio stream parameter")
    base = caller.base_url
    params: dict[str, Any] = {
        "to": call.to,
        "from_": caller.from_number,
        "url": f"{base}/twilio/voice" + (f"?{urlencode(query)}" if query else ""),
        "method": "POST",
        "status_callback": f"{base}/twilio/status",
        "status_callback_method": "POST",
        "status_callback_event": list(STATUS_EVENTS),
    }
    if caller.machine_detection:
        params.update(
            machine_detection="DetectMessageEnd",  # the verdict comes after the beep
            async_amd="true",
            async_amd_status_callback=f"{base}/twilio/amd",
            async_amd_status_callback_method="POST",
        )
    return params
