"""Admission: a media stream becomes a call only once its `start` carries a valid, unexpired,
unspent stream token for its own CallSid and parameters (and comes from the configured
account), and the instance has room for another call.

Nothing is opened for a stream before this says yes, so strangers cannot spend the Realtime
quota. A socket that sends no valid `start` in time is not Twilio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from bot.call.channels import ChannelClosed, TwilioChannel
from bot.call.stream_tokens import StreamTokens
from bot.core.tokens import TOKEN_PARAMETER, bound_parameters
from bot.core.twilio import TwilioStart, TwilioStop
from bot.errors import TwilioProtocolError
from bot.log import CallLogger, FrameErrors, ThrottledLog

__all__ = ["Admission", "Admitted", "Refused", "admit"]

logger = logging.getLogger("bot.call")
# What sockets that have not shown a valid token cause is logged at most once a minute.
STRANGERS: Final = ThrottledLog(logger)

CALL_LOG_CHECK_S: Final = 1.0  # a slow call log must not hold up a caller


@dataclass(frozen=True)
class Admission:
    """What a stream must show to be let in."""

    tokens: StreamTokens
    account_sid: str | None
    start_timeout_s: float = 10.0  # Twilio sends `start` at once
    # Claim the call beyond this process (the call log, or the instances sharing
    # PostgreSQL), given the stream's parameters: why another stream has it, or None.
    claim: Callable[[str, Mapping[str, str]], Awaitable[str | None]] | None = None


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


async def admit(channel: TwilioChannel, admission: Admission) -> Admitted | Refused:
    errors = FrameErrors(CallLogger(logger, {}), STRANGERS)
    try:
        start = await asyncio.wait_for(_start(channel, errors), admission.start_timeout_s)
    except (TimeoutError, ChannelClosed):
        return Refused(
            f"no valid start within {admission.start_timeout_s:.1f} s", False, errors.log
        )
    errors.log = CallLogger(logger, {"call_sid": start.call_sid, "stream_sid": start.stream_sid})
    tokens, call_sid = admission.tokens, start.call_sid
    parameters = bound_parameters(start.custom_parameters)
    token = start.custom_parameters.get(TOKEN_PARAMETER)
    problem = tokens.verify(call_sid, token, parameters)
    if problem is None and admission.account_sid not in (None, start.account_sid):
        problem = "start.accountSid is not this account"
    if problem is None:
        problem = await _claim(admission, call_sid, parameters, errors.log)
    # Checked again after the wait above: the check and the spending must be one step.
    if problem is None:
        problem = tokens.verify(call_sid, token, parameters)
    if problem is not None:
        return Refused(problem, True, errors.log)
    tokens.spend(call_sid)
    errors.strangers = None  # a known call from here on: its own log lines, once per kind
    return Admitted(start, errors.log, errors)


async def _claim(
    admission: Admission, call_sid: str, parameters: Mapping[str, str], log: CallLogger
) -> str | None:
    if admission.claim is None:
        return None
    try:
        return await asyncio.wait_for(admission.claim(call_sid, parameters), CALL_LOG_CHECK_S)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the database is down or slow: the call still goes ahead
        log.warning("could not check the call's other streams (%s)", type(exc).__name__)
        return None


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
