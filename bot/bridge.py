"""One call: the Twilio media socket, the Realtime socket and a `CallSession` between them.

This is the only module that knows both sockets. It receives, parses, hands events to the
session and executes the commands it returns; it makes no protocol decisions of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import websockets
from websockets.asyncio.client import ClientConnection

from bot.config import Settings
from bot.errors import ProtocolError, RealtimeUnavailable
from bot.log import CallLogger
from bot.realtime_client import describe_close
from bot.sansio import realtime as rt
from bot.sansio import twilio as tw
from bot.sansio.session import (
    CallSession,
    Command,
    DigitPressed,
    EndCall,
    Interrupted,
    Notice,
    ResponseFinished,
    SendToRealtime,
    SendToTwilio,
    TranscriptTurn,
)
from bot.sansio.tokens import verify_stream_token

__all__ = ["CallRegistry", "TwilioChannel", "run_call"]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 0.8  # the Realtime socket must be gone within 1 s of the caller
POLICY_VIOLATION: Final = 1008


class TwilioChannel(Protocol):
    """The Twilio side of a call, as text frames. `receive` raises on disconnect."""

    async def receive(self) -> str | bytes: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class ChannelClosed(Exception):
    """The Twilio socket is gone."""


RealtimeDialer = Callable[[Settings], Coroutine[Any, Any, ClientConnection]]


@dataclass
class CallRegistry:
    """Process-wide call state: pre-opened Realtime sockets and the active-call count."""

    settings: Settings
    signing_secret: str
    dial: RealtimeDialer
    start_timeout_s: float = 10.0  # Twilio sends `start` at once; a silent socket is not Twilio
    prewarm_ttl_s: float = 30.0
    active_calls: int = 0
    calls_started: int = 0
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)
    _streams: dict[str, _StopSignal] = field(default_factory=dict)
    _shutting_down: bool = False
    _prewarmed: dict[str, asyncio.Task[ClientConnection]] = field(default_factory=dict)

    def prewarm(self, call_sid: str) -> None:
        """Start opening the Realtime socket while Twilio sets up the stream.

        Only called after the webhook signature was verified, so strangers cannot use it.
        A socket no stream claims within `prewarm_ttl_s` is closed.
        """
        if call_sid in self._prewarmed:
            return
        task = asyncio.create_task(self.dial(self.settings), name=f"prewarm {call_sid}")
        self._prewarmed[call_sid] = task
        asyncio.get_running_loop().call_later(self.prewarm_ttl_s, self._expire, call_sid, task)

    def _expire(self, call_sid: str, task: asyncio.Task[ClientConnection]) -> None:
        if self._prewarmed.get(call_sid) is task:
            del self._prewarmed[call_sid]
            _discard(task)

    def end_all_calls(self, reason: str) -> None:
        """End every active call politely (the callers hear the fallback message)."""
        self._shutting_down = True
        for stop in self._streams.values():
            stop.set(reason)

    def register_stream(self, call_sid: str) -> _StopSignal:
        stop = _StopSignal()
        if self._shutting_down:
            stop.set("server shutting down")
        previous = self._streams.get(call_sid)
        if previous is not None:
            # Twilio may open a second stream for the same call (a network handover);
            # two bots on one line would talk over each other.
            previous.set("replaced by a new stream for the same call")
        self._streams[call_sid] = stop
        return stop

    def unregister_stream(self, call_sid: str, stop: _StopSignal) -> None:
        if self._streams.get(call_sid) is stop:
            del self._streams[call_sid]

    async def take_realtime(self, call_sid: str) -> ClientConnection:
        task = self._prewarmed.pop(call_sid, None)
        if task is None:
            return await self.dial(self.settings)
        return await task

    async def close(self) -> None:
        for task in self._prewarmed.values():
            _discard(task)
        self._prewarmed.clear()
        if self.cleanups:
            await asyncio.wait(self.cleanups, timeout=2)


class _StopSignal:
    """Asks one call to end, with a reason."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def _discard(task: asyncio.Task[ClientConnection]) -> None:
    """Cancel a pre-open, or close the socket it produced."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        connection = task.result()
        asyncio.get_running_loop().create_task(connection.close()).add_done_callback(
            lambda t: t.exception() if not t.cancelled() else None
        )


@dataclass
class _FrameErrors:
    """Malformed frames are logged once per kind and counted, never fatal."""

    log: CallLogger
    counts: dict[str, int] = field(default_factory=dict)

    def report(self, side: str, exc: ProtocolError) -> None:
        key = f"{side}: {exc}"
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if not seen:
            self.log.warning("skipped malformed %s frame: %s", side, exc)


class _CallEnded(Exception):
    def __init__(self, by: str, reason: str) -> None:
        super().__init__(reason)
        self.by = by
        self.reason = reason


async def run_call(channel: TwilioChannel, registry: CallRegistry) -> None:
    """Serve one Media Stream from `connected` to close. Never raises for call failures."""
    settings = registry.settings
    log = CallLogger(logger, {})
    errors = _FrameErrors(log)
    try:
        start = await asyncio.wait_for(_await_start(channel, errors), registry.start_timeout_s)
    except (TimeoutError, ChannelClosed):
        log.warning("stream closed: no valid start within %.1f s", registry.start_timeout_s)
        await _close_quietly(channel, POLICY_VIOLATION, "no start")
        return
    log = CallLogger(logger, {"call_sid": start.call_sid, "stream_sid": start.stream_sid})
    errors.log = log
    problem = verify_stream_token(
        registry.signing_secret,
        start.custom_parameters.get("token"),
        start.call_sid,
        time.time(),
    )
    if problem is None and settings.twilio_account_sid not in (None, start.account_sid):
        problem = "start.accountSid is not this account"
    if problem is not None:
        log.warning("stream rejected, no Realtime session opened for it: %s", problem)
        await _close_quietly(channel, POLICY_VIOLATION, "unauthorized")
        return

    stop = registry.register_stream(start.call_sid)
    registry.active_calls += 1
    registry.calls_started += 1
    started = time.monotonic()
    session = CallSession(
        stream_sid=start.stream_sid,
        call_sid=start.call_sid,
        audio=settings.realtime_audio,
        greeting=settings.bot_greeting,
    )
    end_by, end_reason = "bridge", "unknown"
    realtime: ClientConnection | None = None
    try:
        try:
            realtime = await registry.take_realtime(start.call_sid)
        except RealtimeUnavailable as exc:
            end_by, end_reason = "realtime", f"Realtime unavailable: {exc}"
            log.error("%s; closing the stream so the caller hears the fallback", end_reason)
            return
        log.info(
            "call connected (%s dialect, %s audio)",
            settings.realtime_dialect.value,
            settings.realtime_audio.value,
        )
        try:
            async with asyncio.TaskGroup() as group:
                await _execute(session.begin(), channel, realtime, log)
                group.create_task(_pump_twilio(channel, realtime, session, errors, log))
                group.create_task(_pump_realtime(channel, realtime, session, errors, log))
                group.create_task(_await_stop(stop))
        except* _CallEnded as ended:
            first = ended.exceptions[0]
            assert isinstance(first, _CallEnded)
            end_by, end_reason = first.by, first.reason
        except* Exception as failed:
            # A bug must not leave the caller in silence or reach other calls.
            end_by, end_reason = "bridge", f"internal error: {failed.exceptions[0]!r}"
            log.error("bridge failure", exc_info=failed.exceptions[0])
    except asyncio.CancelledError:
        end_by, end_reason = "caller", "media socket closed"
        raise
    finally:
        registry.active_calls -= 1
        registry.unregister_stream(start.call_sid, stop)
        # Quart may cancel this task again while it cleans up (the caller's socket went
        # away); the cleanup runs in its own task so it always completes.
        cleanup = asyncio.create_task(
            _finish_call(channel, realtime, session, errors, log, end_by, end_reason, started)
        )
        registry.cleanups.add(cleanup)
        cleanup.add_done_callback(registry.cleanups.discard)
        await asyncio.shield(cleanup)


async def _finish_call(
    channel: TwilioChannel,
    realtime: ClientConnection | None,
    session: CallSession,
    errors: _FrameErrors,
    log: CallLogger,
    end_by: str,
    end_reason: str,
    started: float,
) -> None:
    if realtime is not None:
        await _close_realtime(realtime)
    if end_by != "caller":
        # Closing our side makes Twilio run the TwiML after <Connect>: the fallback.
        await _close_quietly(channel, 1000, "bridge ended the stream")
    stats = session.stats
    log.info(
        "call ended by %s (%s) after %.1f s: frames in %d / out %d, marks %d/%d played, "
        "interruptions %d, clears %d, deltas dropped %d, tokens %d%s",
        end_by,
        end_reason,
        time.monotonic() - started,
        stats.frames_in,
        stats.frames_out,
        stats.marks_played,
        stats.marks_sent,
        stats.interruptions,
        stats.clears,
        stats.deltas_dropped,
        stats.usage_total_tokens,
        "".join(f"; {n} x {key}" for key, n in errors.counts.items() if n > 1),
    )


async def _await_stop(stop: _StopSignal) -> None:
    await stop.event.wait()
    raise _CallEnded("bridge", stop.reason)


async def _await_start(channel: TwilioChannel, errors: _FrameErrors) -> tw.TwilioStart:
    while True:
        frame = await channel.receive()
        try:
            event = tw.parse(frame)
        except ProtocolError as exc:
            errors.report("twilio", exc)
            continue
        if isinstance(event, tw.TwilioStart):
            return event
        if isinstance(event, tw.TwilioStop):
            raise ChannelClosed


async def _pump_twilio(
    channel: TwilioChannel,
    realtime: ClientConnection,
    session: CallSession,
    errors: _FrameErrors,
    log: CallLogger,
) -> None:
    while True:
        try:
            frame = await channel.receive()
        except ChannelClosed:
            raise _CallEnded("caller", "media socket closed") from None
        try:
            event = tw.parse(frame)
        except ProtocolError as exc:
            errors.report("twilio", exc)
            continue
        if event is not None:
            await _execute(session.handle_twilio(event), channel, realtime, log)


async def _pump_realtime(
    channel: TwilioChannel,
    realtime: ClientConnection,
    session: CallSession,
    errors: _FrameErrors,
    log: CallLogger,
) -> None:
    try:
        async for frame in realtime:
            try:
                event = rt.parse(frame)
            except ProtocolError as exc:
                errors.report("realtime", exc)
                continue
            if event is not None:
                await _execute(session.handle_realtime(event), channel, realtime, log)
    except websockets.ConnectionClosed:
        pass
    raise _CallEnded("realtime", f"Realtime socket {describe_close(realtime)}")


async def _execute(
    commands: list[Command], channel: TwilioChannel, realtime: ClientConnection, log: CallLogger
) -> None:
    for command in commands:
        if isinstance(command, SendToRealtime):
            try:
                await realtime.send(command.text)
            except websockets.ConnectionClosed:
                raise _CallEnded(
                    "realtime", f"Realtime socket {describe_close(realtime)}"
                ) from None
        elif isinstance(command, SendToTwilio):
            try:
                await channel.send(command.text)
            except ChannelClosed:
                raise _CallEnded("caller", "media socket closed") from None
        elif isinstance(command, EndCall):
            raise _CallEnded(command.by, command.reason)
        elif isinstance(command, Interrupted):
            log.info(
                "barge-in: item %s truncated at %d ms of %d ms received%s",
                command.item_id,
                command.audio_end_ms,
                command.received_ms,
                " (Twilio cleared)" if command.cleared else "",
            )
        elif isinstance(command, TranscriptTurn):
            log.info("%s: %s", command.speaker, _shorten(command.text))
        elif isinstance(command, DigitPressed):
            log.info("caller pressed %s", command.digit)
        elif isinstance(command, ResponseFinished):
            if command.status not in ("completed", "cancelled"):
                log.warning(
                    "response %s ended %s (%s)", command.response_id, command.status, command.reason
                )
        elif isinstance(command, Notice):
            log.log(logging.getLevelName(command.level.upper()), "%s", command.message)


async def _close_realtime(realtime: ClientConnection) -> None:
    try:
        await asyncio.wait_for(realtime.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, websockets.WebSocketException, OSError):
        pass
    finally:
        # A peer that ignores the close handshake gets its TCP connection dropped.
        if realtime.transport is not None and not realtime.transport.is_closing():
            realtime.transport.abort()


async def _close_quietly(channel: TwilioChannel, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await channel.close(code, reason)


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
