"""One call: the Twilio media socket, the Realtime socket and a `CallSession` between them.

This is the only module that knows both sockets. It receives, parses, hands events to the
session and executes the commands it returns; it makes no protocol decisions of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import websockets
from websockets.asyncio.client import ClientConnection

from bot.calllog import CallLog
from bot.config import Settings
from bot.errors import ProtocolError, RealtimeUnavailable, TwilioApiError
from bot.log import CallLogger
from bot.metrics import Metrics
from bot.realtime_client import describe_close
from bot.recorder import CallRecorder
from bot.sansio import realtime as rt
from bot.sansio import twilio as tw
from bot.sansio.session import (
    CallSession,
    CallStats,
    Command,
    DigitPressed,
    EndCall,
    HangUp,
    Interrupted,
    LeaveVoicemail,
    Notice,
    PlayedAudio,
    ResponseFinished,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    ToolRecord,
    Transfer,
    TurnRecord,
)
from bot.sansio.tokens import verify_stream_token
from bot.storage import utcnow
from bot.tools import Tool, ToolOutcome, builtin_schemas
from bot.twilio_rest import TwilioRest

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


RealtimeDialer = Callable[
    [Settings, tuple[dict[str, object], ...]], Coroutine[Any, Any, ClientConnection]
]


@dataclass
class CallRegistry:
    """Process-wide call state: pre-opened Realtime sockets and the active-call count."""

    settings: Settings
    signing_secret: str
    dial: RealtimeDialer
    call_log: CallLog
    rest: TwilioRest | None = None
    tools: dict[str, Tool] = field(default_factory=dict)
    start_timeout_s: float = 10.0  # Twilio sends `start` at once; a silent socket is not Twilio
    prewarm_ttl_s: float = 30.0
    active_calls: int = 0
    calls_started: int = 0
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)
    calls: dict[str, _Call] = field(default_factory=dict)  # active, by CallSid
    _verdicts: dict[str, str] = field(default_factory=dict)  # AMD results before the stream
    metrics: Metrics = field(init=False)
    _shutting_down: bool = False
    _prewarmed: dict[str, asyncio.Task[ClientConnection]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self._live_stats)
        schemas = builtin_schemas(transfer=self.settings.transfer_to is not None)
        self.tool_schemas = tuple(schemas + [tool.schema for tool in self.tools.values()])

    def deliver_verdict(self, call_sid: str, answered_by: str) -> None:
        """Answering-machine detection's result, for the call's stream now or when it starts."""
        call = self.calls.get(call_sid)
        if call is None:
            self._verdicts[call_sid] = answered_by
            asyncio.get_running_loop().call_later(120, self._verdicts.pop, call_sid, None)
        else:
            call.spawn(call.execute(call.session.answered(answered_by)))

    def take_verdict(self, call_sid: str) -> str | None:
        return self._verdicts.pop(call_sid, None)

    def _live_stats(self) -> Iterator[CallStats]:
        return (call.session.stats for call in self.calls.values())

    def prewarm(self, call_sid: str) -> None:
        """Start opening the Realtime socket while Twilio sets up the stream.

        Only called after the webhook signature was verified, so strangers cannot use it.
        A socket no stream claims within `prewarm_ttl_s` is closed.
        """
        if call_sid in self._prewarmed:
            return
        task = asyncio.create_task(
            self.dial(self.settings, self.tool_schemas), name=f"prewarm {call_sid}"
        )
        self._prewarmed[call_sid] = task
        asyncio.get_running_loop().call_later(self.prewarm_ttl_s, self._expire, call_sid, task)

    def _expire(self, call_sid: str, task: asyncio.Task[ClientConnection]) -> None:
        if self._prewarmed.get(call_sid) is task:
            del self._prewarmed[call_sid]
            _discard(task)

    def end_all_calls(self, reason: str) -> None:
        """End every active call politely (the callers hear the fallback message)."""
        self._shutting_down = True
        for call in self.calls.values():
            call.stop.set(reason)

    def register(self, call: _Call) -> None:
        previous = self.calls.get(call.call_sid)
        if previous is not None:
            # Twilio may open a second stream for the same call (a network handover);
            # two bots on one line would talk over each other.
            previous.stop.set("replaced by a new stream for the same call")
        if self._shutting_down:
            call.stop.set("server shutting down")
        self.calls[call.call_sid] = call

    def unregister(self, call: _Call) -> None:
        if self.calls.get(call.call_sid) is call:
            del self.calls[call.call_sid]

    async def take_realtime(self, call_sid: str) -> ClientConnection:
        task = self._prewarmed.pop(call_sid, None)
        if task is None:
            return await self.dial(self.settings, self.tool_schemas)
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
        registry.metrics.call_finished("rejected", None)
        await _close_quietly(channel, POLICY_VIOLATION, "unauthorized")
        return
    call = _Call(channel, registry, start, log, errors)
    await call.run()


class _Call:
    """One accepted stream: both sockets, the session, and what gets recorded of it."""

    def __init__(
        self,
        channel: TwilioChannel,
        registry: CallRegistry,
        start: tw.TwilioStart,
        log: CallLogger,
        errors: _FrameErrors,
    ) -> None:
        settings = registry.settings
        self.channel = channel
        self.registry = registry
        self.call_sid = start.call_sid
        self.log = log
        self.errors = errors
        self.call_log = registry.call_log
        params = start.custom_parameters
        variables = {k[4:]: v for k, v in params.items() if k.startswith("var_")}
        instructions = params.get("instructions") or None
        if variables or instructions:
            instructions = render_instructions(instructions or settings.bot_instructions, variables)
        self.session = CallSession(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            audio=settings.realtime_audio,
            greeting=params.get("greeting") or settings.bot_greeting,
            record_audio=settings.record_audio,
            dialect=settings.realtime_dialect,
            instructions=instructions,
            hold_for_human=params.get("amd") == "1",
            forward_dtmf=settings.forward_dtmf,
        )
        self._group: asyncio.TaskGroup | None = None
        self.stop = _StopSignal()
        self.realtime: ClientConnection | None = None
        self.recorder = (
            CallRecorder(settings.recordings_path / f"{start.call_sid}-{start.stream_sid}.wav")
            if settings.record_audio
            else None
        )
        self.latency_seen: set[str] = set()
        now = utcnow()
        self.call_log.call(
            start.call_sid,
            stream_sid=start.stream_sid,
            started_at=now,
            answered_at=now,
            direction=params.get("direction") or "inbound",
            from_number=params.get("from") or None,
            to_number=params.get("to") or None,
            provider=urlsplit(settings.realtime_url).hostname,
            model=settings.realtime_model,
            dialect=settings.realtime_dialect.value,
            audio_mode=settings.realtime_audio.value,
            recording_path=str(self.recorder.path) if self.recorder else None,
        )

    async def run(self) -> None:
        registry = self.registry
        settings = registry.settings
        registry.register(self)
        registry.active_calls += 1
        registry.calls_started += 1
        started = time.monotonic()
        end_by, end_reason = "bridge", "unknown"
        try:
            try:
                self.realtime = await registry.take_realtime(self.call_sid)
            except RealtimeUnavailable as exc:
                end_by, end_reason = "realtime", f"Realtime unavailable: {exc}"
                self.log.error(
                    "%s; closing the stream so the caller hears the fallback", end_reason
                )
                return
            self.log.info(
                "call connected (%s dialect, %s audio)",
                settings.realtime_dialect.value,
                settings.realtime_audio.value,
            )
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    await self.execute(self.session.begin())
                    verdict = registry.take_verdict(self.call_sid)
                    if verdict is not None:
                        await self.execute(self.session.answered(verdict))
                    group.create_task(self.pump_twilio())
                    group.create_task(self.pump_realtime())
                    group.create_task(_await_stop(self.stop))
            except* _CallEnded as ended:
                first = ended.exceptions[0]
                assert isinstance(first, _CallEnded)
                end_by, end_reason = first.by, first.reason
            except* Exception as failed:
                # A bug must not leave the caller in silence or reach other calls.
                end_by, end_reason = "bridge", f"internal error: {failed.exceptions[0]!r}"
                self.log.error("bridge failure", exc_info=failed.exceptions[0])
        except asyncio.CancelledError:
            end_by, end_reason = "caller", "media socket closed"
            raise
        finally:
            registry.active_calls -= 1
            registry.unregister(self)
            # Quart may cancel this task again while it cleans up (the caller's socket went
            # away); the clean-up runs in its own task so it always completes.
            cleanup = asyncio.create_task(self.finish(end_by, end_reason, started))
            registry.cleanups.add(cleanup)
            cleanup.add_done_callback(registry.cleanups.discard)
            await asyncio.shield(cleanup)

    async def finish(self, end_by: str, end_reason: str, started: float) -> None:
        if self.realtime is not None:
            await _close_realtime(self.realtime)
        if end_by != "caller":
            # Closing our side makes Twilio run the TwiML after <Connect>: the fallback.
            await _close_quietly(self.channel, 1000, "bridge ended the stream")
        if self.recorder is not None:
            try:
                self.recorder.close()
            except OSError as exc:
                self.log.error("recording could not be finished: %s", exc.strerror)
        stats = self.session.stats
        if end_by == "realtime":
            self.registry.metrics.realtime_errors.inc()
            self.call_log.event(self.call_sid, self.session.now_ms, "error", end_reason)
            self.call_log.increment(self.call_sid, errors=1)
        self.call_log.call(self.call_sid, ended_at=utcnow(), ended_by=end_by, end_reason=end_reason)
        self.registry.metrics.call_finished(end_by, stats)
        self.log.info(
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
            "".join(f"; {n} x {key}" for key, n in self.errors.counts.items() if n > 1),
        )

    async def pump_twilio(self) -> None:
        session, recorder = self.session, self.recorder
        while True:
            try:
                frame = await self.channel.receive()
            except ChannelClosed:
                raise _CallEnded("caller", "media socket closed") from None
            try:
                event = tw.parse(frame)
            except ProtocolError as exc:
                self.errors.report("twilio", exc)
                continue
            if event is None:
                continue
            await self.execute(session.handle_twilio(event))
            if recorder is not None and isinstance(event, tw.TwilioMedia):
                recorder.caller(event.ulaw, session.now_ms)

    async def pump_realtime(self) -> None:
        realtime = self.realtime
        assert realtime is not None
        try:
            async for frame in realtime:
                try:
                    event = rt.parse(frame)
                except ProtocolError as exc:
                    self.errors.report("realtime", exc)
                    continue
                if event is not None:
                    await self.execute(self.session.handle_realtime(event))
        except websockets.ConnectionClosed:
            pass
        raise _CallEnded("realtime", f"Realtime socket {describe_close(realtime)}")

    async def execute(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, SendToRealtime):
                assert self.realtime is not None
                try:
                    await self.realtime.send(command.text)
                except websockets.ConnectionClosed:
                    raise _CallEnded(
                        "realtime", f"Realtime socket {describe_close(self.realtime)}"
                    ) from None
            elif isinstance(command, SendToTwilio):
                try:
                    await self.channel.send(command.text)
                except ChannelClosed:
                    raise _CallEnded("caller", "media socket closed") from None
            elif isinstance(command, EndCall):
                raise _CallEnded(command.by, command.reason)
            elif isinstance(command, RunTool):
                self.spawn(self.run_tool(command))
            elif isinstance(command, HangUp):
                await self.hang_up(command.reason)
            elif isinstance(command, Transfer):
                await self.transfer(command.reason)
            elif isinstance(command, LeaveVoicemail):
                await self.leave_voicemail(command.answered_by)
            else:
                self.record(command)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Work that must not hold up the audio pumps; it ends with the call."""
        if self._group is None:
            work.close()
            return
        self._group.create_task(work)

    async def run_tool(self, command: RunTool) -> None:
        tool = self.registry.tools.get(command.name)
        if tool is None:
            outcome = ToolOutcome(
                json.dumps({"error": f"no tool named {command.name}"}), "unknown tool", 0
            )
        else:
            outcome = await tool.run(command.arguments, self.registry.settings.tool_timeout_s)
        self.log_tool(
            command.name,
            command.arguments,
            outcome.output,
            outcome.error,
            outcome.duration_ms,
            command.at_ms,
        )
        await self.execute(self.session.tool_finished(command.call_id, outcome.output))

    def log_tool(
        self,
        name: str,
        arguments: str,
        output: str,
        error: str | None,
        duration_ms: int,
        at_ms: int,
    ) -> None:
        if error is not None:
            self.log.warning("tool %s failed: %s", name, error)
            self.call_log.increment(self.call_sid, errors=1)
        else:
            self.log.info("tool %s(%s) -> %s", name, _shorten(arguments, 80), _shorten(output, 80))
        self.call_log.event(
            self.call_sid,
            at_ms,
            "tool",
            f"{name}({arguments}) → {output}",
            {
                "name": name,
                "arguments": arguments,
                "result": output,
                "error": error,
                "duration_ms": duration_ms,
            },
        )

    async def _call_over(self, how: str, action: Coroutine[Any, Any, bool] | None) -> None:
        """Carry out an action through Twilio's REST API, then end our side of the call."""
        if action is not None:
            try:
                live = await action
                if not live:
                    self.log.info("%s: the call had already ended", how)
            except TwilioApiError as exc:
                self.log.error("%s failed: %s", how, exc)
                self.call_log.event(self.call_sid, self.session.now_ms, "error", f"{how}: {exc}")
                self.call_log.increment(self.call_sid, errors=1)
        raise _CallEnded("bot", how)

    async def hang_up(self, reason: str) -> None:
        rest = self.registry.rest
        await self._call_over(f"hung up: {reason}", rest.hang_up(self.call_sid) if rest else None)

    async def transfer(self, reason: str) -> None:
        settings, rest = self.registry.settings, self.registry.rest
        target = settings.transfer_to
        if rest is None or target is None:
            self.log.error("transfer asked for, but TRANSFER_TO or Twilio credentials are missing")
            return
        self.call_log.event(
            self.call_sid, self.session.now_ms, "transfer", f"to {target}: {reason}"
        )
        twiml = transfer_twiml(target, settings.transfer_announcement)
        await self._call_over(f"transferred to {target}", rest.redirect(self.call_sid, twiml))

    async def leave_voicemail(self, answered_by: str) -> None:
        settings, rest = self.registry.settings, self.registry.rest
        message = settings.voicemail_message
        self.call_log.call(self.call_sid, answered_by=answered_by)
        if rest is None:
            await self._call_over(f"answered by {answered_by}", None)
        elif message:
            twiml = f"<Response><Say>{escape(message)}</Say><Hangup/></Response>"
            await self._call_over("voicemail left", rest.redirect(self.call_sid, twiml))
        else:
            await self._call_over(
                f"answered by {answered_by}: hung up", rest.hang_up(self.call_sid)
            )

    def record(self, command: Command) -> None:
        """Commands that only inform: the call log, metrics, the recording, the log file."""
        call_sid, log, call_log = self.call_sid, self.log, self.call_log
        if isinstance(command, ToolRecord):
            self.log_tool(command.name, command.arguments, command.result, None, 0, command.at_ms)
        elif isinstance(command, PlayedAudio):
            if self.recorder is not None:
                self.recorder.bot(command.ulaw, command.ended_ms)
        elif isinstance(command, TurnRecord):
            call_log.turn(call_sid, command)
            if command.latency_ms is not None and command.item_id not in self.latency_seen:
                self.latency_seen.add(command.item_id)
                self.registry.metrics.turn_latency.observe(command.latency_ms / 1000)
            if command.text is not None and command.ended_ms is not None:
                shown = command.heard_text if command.interrupted else command.text
                log.info("%s: %s", command.speaker, _shorten(shown or ""))
        elif isinstance(command, Interrupted):
            log.info(
                "barge-in: item %s truncated at %d ms of %d ms received%s",
                command.item_id,
                command.audio_end_ms,
                command.received_ms,
                " (Twilio cleared)" if command.cleared else "",
            )
            self.registry.metrics.barge_ins.inc()
            call_log.increment(call_sid, interruptions=1)
            call_log.event(
                call_sid,
                command.at_ms,
                "interruption",
                f"caller spoke over the bot; heard {command.audio_end_ms} of "
                f"{command.received_ms} ms",
                {"item_id": command.item_id, "audio_end_ms": command.audio_end_ms},
            )
        elif isinstance(command, DigitPressed):
            log.info("caller pressed %s", command.digit)
            call_log.event(call_sid, command.at_ms, "dtmf", command.digit)
        elif isinstance(command, ResponseFinished):
            usage = command.usage or {}
            call_log.increment(
                call_sid,
                input_tokens=_int(usage.get("input_tokens")),
                output_tokens=_int(usage.get("output_tokens")),
                total_tokens=_int(usage.get("total_tokens")),
            )
            if command.status not in ("completed", "cancelled"):
                detail = f"response {command.response_id} ended {command.status} ({command.reason})"
                log.warning("%s", detail)
                call_log.event(call_sid, self.session.now_ms, "error", detail)
                call_log.increment(call_sid, errors=1)
        elif isinstance(command, Notice):
            log.log(logging.getLevelName(command.level.upper()), "%s", command.message)
            if command.level == "warning":
                self.registry.metrics.realtime_errors.inc()
                call_log.event(call_sid, self.session.now_ms, "error", command.message)
                call_log.increment(call_sid, errors=1)


def render_instructions(template: str, variables: dict[str, str]) -> str:
    """Fill `{name}` placeholders with the call's variables; unknown ones stay as written."""

    class Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        text = template.format_map(Keep(variables))
    except (ValueError, IndexError):
        text = template  # braces that are not placeholders
    if variables:
        facts = "; ".join(f"{name}: {value}" for name, value in variables.items())
        text += f"\n\nAbout this call: {facts}."
    return text


def transfer_twiml(target: str, announcement: str) -> str:
    dial = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else escape(target)
    return f"<Response><Say>{escape(announcement)}</Say><Dial>{dial}</Dial></Response>"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
