"""Admission: a media stream becomes a call only once its `start` carries a valid, unexpired
stream token for its own CallSid (and comes from the configured account).

Nothing is opened for a stream before this says yes, so strangers cannot spend the Realtime
quota. A socket that sends no valid `start` in time is not Twilio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.call.channels import ChannelClosed, TwilioChannel
from bot.core.tokens import verify_stream_token
from bot.core.twilio import TwilioStart, TwilioStop
from bot.errors import TwilioProtocolError
from bot.log import CallLogger, FrameErrors

__all__ = ["Admission", "Admitted", "Refused", "admit"]

logger = logging.getLogger("bot.call")


@dataclass(frozen=True)
class Admission:
    """What a stream must show to be let in."""

    secret: str
    account_sid: str | None
    start_timeout_s: float = 10.0  # Twilio sends `start` at once


@dataclass(frozen=True)
class Admitted:
    start: TwilioStart
    log: CallLogger
    errors: FrameErrors


@dataclass(frozen=True)
class Refused:
    reason: str
    unauthorized: bool  # a start came, with the wrong token or account
    log: CallLogger


async def admit(
    channel: TwilioChannel, admission: Admission, clock: Callable[[], float] = time.time
) -> Admitted | Refused:
    errors = FrameErrors(CallLogger(logger, {}))
    try:
        start = await asyncio.wait_for(_start(channel, errors), admission.start_timeout_s)
    except (TimeoutError, ChannelClosed):
        return Refused(
            f"no valid start within {admission.start_timeout_s:.1f} s", False, errors.log
        )
    errors.log = CallLogger(logger, {"call_sid": start.call_sid, "stream_sid": start.stream_sid})
    token = start.custom_parameters.get("token")
    problem = verify_stream_token(admission.secret, token, start.call_sid, clock())
    if problem is None and admission.account_sid not in (None, start.account_sid):
        problem = "start.accountSid is not this account"
    if problem is not None:
        return Refused(problem, True, errors.log)
    return Admitted(start, errors.log, errors)


async def _start(channel: TwilioChannel, errors: FrameErrors) -> TwilioStart:
    while True:
        try:
            event = await channel.receive()
        except TwilioProtocolError as exc:
            errors.report("twilio", exc)
            continue
        if isinstance(event, TwilioStart):
            return event
        if isinstance(event, TwilioStop):
            raise ChannelClosed("twilio", "stopped before start")
