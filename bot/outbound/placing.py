"""Placing one outbound call: the Twilio request, and the call's first row in the call log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.config import Settings
from bot.outbound.core.request import Caller, OutboundCall, call_request

if TYPE_CHECKING:
    from bot.store.calls import CallRecords
    from bot.twilio_rest import TwilioRest

__all__ = ["caller_of", "outbound_problems", "place_call"]


def outbound_problems(settings: Settings) -> list[str]:
    """What is missing to place calls, in words a user can act on."""
    problems = []
    if not settings.twilio.account_sid:
        problems.append("TWILIO_ACCOUNT_SID is required to place calls")
    if settings.twilio.auth_token is None:
        problems.append("TWILIO_AUTH_TOKEN is required to place calls")
    if not settings.twilio.from_number:
        problems.append("TWILIO_FROM_NUMBER (the caller ID, E.164) is required to place calls")
    if settings.server.public_url is None:
        problems.append("PUBLIC_URL is required: Twilio fetches the call's TwiML from it")
    return problems


def caller_of(settings: Settings) -> Caller:
    """Us, as the caller; `outbound_problems` must be empty."""
    assert settings.twilio.from_number is not None and settings.server.public_url is not None
    return Caller(
        settings.twilio.from_number,
        settings.server.public_url,
        settings.outbound.machine_detection,
    )


async def place_call(
    caller: Caller, rest: TwilioRest, records: CallRecords, call: OutboundCall
) -> str:
    """Place the call and log it at once (calls nobody answers never reach the webhook).

    Raises:
        ValueError: the call cannot be asked for (see `call_request`).
        TwilioApiError: Twilio refused it or could not be reached.
    """
    call_sid = await rest.create_call(**call_request(caller, call))
    await records.record_placed(call_sid, caller.from_number, call.to, "outbound-api")
    return call_sid
