"""Hang-up, transfer, voicemail, time limit: what a call does through Twilio's REST API."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

from bot.config import CallSettings
from bot.core.twiml import say_then_hang_up, transfer_twiml
from bot.errors import TwilioApiError
from bot.twilio_rest import TwilioRest

__all__ = ["ActionOutcome", "TwilioActions"]


@dataclass(frozen=True)
class ActionOutcome:
    summary: str  # what happened, e.g. "hung up: the caller said goodbye"
    problem: str | None = None  # Twilio refused or could not be reached
    already_over: bool = False  # the call had ended before the request
    call_goes_on: bool = False  # nothing was attempted: the call continues


class TwilioActions:
    def __init__(self, rest: TwilioRest | None, settings: CallSettings) -> None:
        self.rest = rest
        self.settings = settings

    async def hang_up(self, call_sid: str, reason: str) -> ActionOutcome:
        summary = f"hung up: {reason}"
        if self.rest is None:
            return ActionOutcome(summary)
        return await _attempt(summary, self.rest.hang_up(call_sid))

    async def transfer(self, call_sid: str, reason: str) -> ActionOutcome:
        target = self.settings.transfer_to
        if self.rest is None or target is None:
            return ActionOutcome(
                "transfer asked for, but TRANSFER_TO or Twilio credentials are missing",
                call_goes_on=True,
            )
        twiml = transfer_twiml(target, self.settings.transfer_announcement)
        return await _attempt(f"transferred to {target}", self.rest.redirect(call_sid, twiml))

    async def leave_voicemail(self, call_sid: str, answered_by: str) -> ActionOutcome:
        if self.rest is None:
            return ActionOutcome(f"answered by {answered_by}")
        message = self.settings.voicemail_message
        if message:
            return await _attempt(
                "voicemail left", self.rest.redirect(call_sid, say_then_hang_up(message))
            )
        return await _attempt(f"answered by {answered_by}: hung up", self.rest.hang_up(call_sid))

    async def time_up(self, call_sid: str) -> ActionOutcome:
        """The call reached MAX_CALL_SECONDS: Twilio says goodbye and hangs up."""
        summary = f"time limit of {self.settings.max_call_s} s reached"
        if self.rest is None:
            return ActionOutcome(summary)  # closing the stream plays the fallback message
        twiml = say_then_hang_up(self.settings.time_limit_message)
        return await _attempt(summary, self.rest.redirect(call_sid, twiml))


async def _attempt(summary: str, request: Awaitable[bool]) -> ActionOutcome:
    try:
        live = await request
    except TwilioApiError as exc:
        return ActionOutcome(summary, problem=str(exc))
    return ActionOutcome(summary, already_over=not live)
