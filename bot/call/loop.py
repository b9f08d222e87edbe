"""One call, from an admitted stream to its end: two pumps feed the session, and the commands
it returns are carried out. The loop makes no protocol decisions of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, assert_never

from bot.call.admission import STRANGERS, Admission, Admitted, Refused, admit
from bot.call.channels import ChannelClosed, RealtimeChannel, TwilioChannel
from bot.call.core.messages import (
    Command,
    EndCall,
    HangUp,
    LeaveVoicemail,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    Transfer,
)
from bot.call.core.prompt import render_instructions
from bot.call.core.session import CallSession, CallStats
from bot.call.journal import CallJournal, SessionLabel
from bot.call.metrics import Metrics
from bot.call.registry import CallRegistry
from bot.call.tools import Tool, ToolOutcome
from bot.call.twilio_actions import ActionOutcome, TwilioActions
from bot.calllog.recorder import CallRecorder
from bot.calllog.writer import CallLog
from bot.cluster.bus import Cluster
from bot.cluster.core.messages import ControlAction
from bot.config import CallSettings
from bot.core.realtime.events import AudioFormat
from bot.core.twilio import TwilioMedia, TwilioMessage
from bot.errors import RealtimeProtocolError, RealtimeUnavailable, TwilioProtocolError

__all__ = ["CallServices", "LiveCall", "serve_stream"]

logger = logging.getLogger("bot.call")

POLICY_VIOLATION: Final = 1008


@dataclass
class CallServices:
    """What every call of the process shares; built when the app starts serving."""

    registry: CallRegistry
    admission: Admission
    settings: CallSettings
    audio: AudioFormat  # of the Realtime session
    label: SessionLabel
    call_log: CallLog
    metrics: Metrics
    actions: TwilioActions
    tools: Mapping[str, Tool]
    recordings: Path | None  # None: calls are not recorded
    cluster: Cluster


async def serve_stream(channel: TwilioChannel, services: CallServices) -> None:
    """Serve one Media Stream from `connected` to close. Never raises for call failures."""
    registry = services.registry
    with registry.media_socket():
        admitted = await admit(channel, services.admission)
        if isinstance(admitted, Refused):
            await _refuse(channel, services, admitted)
            return
        if len(registry.calls) >= services.settings.max_calls:
            # The webhook answers "busy" past MAX_CALLS; this is a burst that got past it.
            admitted.log.warning("stream closed: %d calls already (MAX_CALLS)", len(registry.calls))
            services.metrics.call_finished("busy", None)
            await channel.close(1000, "busy")  # Twilio plays the fallback message
            return
        call = LiveCall(channel, services, admitted)
        registry.register(call)  # with no wait after admission: one stream per call
        await call.run()


async def _refuse(channel: TwilioChannel, services: CallServices, refused: Refused) -> None:
    # Anyone can open the media socket: these lines are throttled, a minute per reason.
    where = refused.log.process("", {})[0]
    if refused.unauthorized:
        STRANGERS.note(
            f"{where}stream rejected, no Realtime session opened for it: {refused.reason}",
            key=refused.reason,
        )
        services.metrics.call_finished("rejected", None)
    else:
        STRANGERS.note(f"{where}stream closed: {refused.reason}", key=refused.reason)
    await channel.close(POLICY_VIOLATION, "unauthorized" if refused.unauthorized else "no start")


class _CallEnded(Exception):
    def __init__(self, by: str, reason: str) -> None:
        super().__init__(reason)
        self.by = by
        self.reason = reason


class LiveCall:
    """One admitted stream: both channels, the session, and the journal."""

    def __init__(self, channel: TwilioChannel, services: CallServices, admitted: Admitted) -> None:
        start, settings = admitted.start, services.settings
        self.channel = channel
        self.services = services
        self.log = admitted.log
        self.errors = admitted.errors
        self._call_sid = start.call_sid
        params = start.custom_parameters
        variables = {k[4:]: v for k, v in params.items() if k.startswith("var_")}
        instructions = params.get("instructions") or None
        if variables or instructions:
            instructions = render_instructions(instructions or settings.instructions, variables)
        self.session = CallSession(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            audio=services.audio,
            greeting=params.get("greeting") or settings.greeting,
            instructions=instructions,
            record_audio=services.recordings is not None,
            hold_for_human=params.get("amd") == "1",
            forward_dtmf=settings.forward_dtmf,
        )
        recorder = None
        if services.recordings is not None:
            recorder = CallRecorder(
                services.recordings / f"{start.call_sid}-{start.stream_sid}.wav",
                settings.max_call_s * 1000,
            )
        self.journal = CallJournal(
            start.call_sid, services.call_log, services.metrics, self.log, recorder
        )
        self.journal.started(start.stream_sid, params, services.label)
        self.realtime: RealtimeChannel | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._media_arrived, self._media_ms = time.monotonic(), 0

    # ---- what the registry sees ------------------------------------------------------------

    @property
    def call_sid(self) -> str:
        return self._call_sid

    @property
    def stats(self) -> CallStats:
        return self.session.stats

    def end(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def deliver_verdict(self, answered_by: str) -> None:
        self.spawn(self.execute(self.session.answered(answered_by)))

    def control(self, action: ControlAction, words: str) -> None:
        self.log.info("operator asked to %s", action.replace("_", " "))
        match action:
            case "say":
                self.spawn(self.execute(self.session.say(words)))
            case "hang_up" | "transfer":
                self.spawn(self._operator_action(action))
            case _:
                assert_never(action)

    async def _operator_action(self, action: ControlAction) -> None:
        actions, reason = self.services.actions, "asked through the API"
        if action == "transfer":
            outcome = await actions.transfer(self.call_sid, reason)
            if not outcome.call_goes_on:
                target = self.services.settings.transfer_to or ""
                self.journal.transfer(self.session.now_ms, target, reason)
        else:
            outcome = await actions.hang_up(self.call_sid, reason)
        self._carried_out(outcome)

    # ---- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the call; it is registered already."""
        registry = self.services.registry
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
            label = self.services.label
            self.log.info("call connected (%s dialect, %s audio)", label.dialect, label.audio_mode)
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    await self.execute(self.session.begin())
                    verdict = registry.take_verdict(self.call_sid)
                    if verdict is not None:
                        await self.execute(self.session.answered(verdict))
                    group.create_task(self._pump_twilio())
                    group.create_task(self._pump_realtime())
                    group.create_task(self._await_stop())
                    group.create_task(self._watch(started))
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
            registry.unregister(self)
            # Quart may cancel this task again while it cleans up (the caller's socket went
            # away); the clean-up runs in its own task so it always completes.
            cleanup = asyncio.create_task(self._finish(end_by, end_reason, started))
            registry.track_cleanup(cleanup)
            await asyncio.shield(cleanup)

    async def _finish(self, end_by: str, end_reason: str, started: float) -> None:
        if self.realtime is not None:
            await self.realtime.close()
        try:
            await asyncio.wait_for(self.services.cluster.release(self.call_sid), 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the heartbeat sweep frees it if this instance stops
            self.log.warning("could not free the call's slot (%s)", type(exc).__name__)
        if end_by != "caller":
            # Closing our side makes Twilio run the TwiML after <Connect>: the fallback.
            await self.channel.close(1000, "bridge ended the stream")
        session = self.session
        self.journal.record(session.take_reports(), session.now_ms)
        self.journal.ended(
            end_by,
            end_reason,
            session.stats,
            session.now_ms,
            time.monotonic() - started,
            self.errors.summary(),
        )

    async def _await_stop(self) -> None:
        await self._stop.wait()
        raise _CallEnded("bridge", self._stop_reason)

    async def _watch(self, started: float) -> None:
        """Ends a stream that went quiet and a call that reached its time limit. Checking
        once a second costs nothing per frame."""
        settings = self.services.settings
        stats = self.session.stats
        frames, quiet_since = stats.frames_in, started
        tick = min(1.0, settings.stream_idle_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if stats.frames_in != frames:
                frames, quiet_since = stats.frames_in, now
            elif now - quiet_since >= settings.stream_idle_s:
                raise _CallEnded("bridge", f"no audio from Twilio for {settings.stream_idle_s:g} s")
            if now - started >= settings.max_call_s:
                self.log.info("time limit of %d s reached", settings.max_call_s)
                self._carried_out(await self.services.actions.time_up(self.call_sid))

    def _tick(self) -> None:
        """The call clock between media frames: the newest frame's time plus the time since
        it arrived."""
        elapsed_ms = int((time.monotonic() - self._media_arrived) * 1000)
        self.session.advance_clock(self._media_ms + elapsed_ms)

    async def _pump_twilio(self) -> None:
        session, channel = self.session, self.channel
        while True:
            try:
                event = await channel.receive()
            except ChannelClosed:
                raise _CallEnded("caller", "media socket closed") from None
            except TwilioProtocolError as exc:
                self.errors.report("twilio", exc)
                continue
            if isinstance(event, TwilioMedia):
                await self.execute(session.handle_twilio(event))
                self._media_arrived, self._media_ms = time.monotonic(), session.now_ms
                self.journal.caller_audio(event.ulaw, session.now_ms)
            else:
                self._tick()
                await self.execute(session.handle_twilio(event))

    async def _pump_realtime(self) -> None:
        session, realtime = self.session, self.realtime
        assert realtime is not None
        while True:
            try:
                event = await realtime.receive()
            except ChannelClosed as exc:
                raise _CallEnded("realtime", exc.reason) from None
            except RealtimeProtocolError as exc:
                self.errors.report("realtime", exc)
                continue
            self._tick()
            await self.execute(session.handle_realtime(event))

    async def execute(self, commands: list[Command]) -> None:
        """Record what happened, then carry out the commands, in order."""
        reports = self.session.take_reports()
        if reports:
            self.journal.record(reports, self.session.now_ms)
        to_twilio: list[TwilioMessage] = []
        for index, command in enumerate(commands):
            match command:
                case SendToTwilio(message):
                    to_twilio.append(message)
                    following = commands[index + 1] if index + 1 < len(commands) else None
                    if isinstance(following, SendToTwilio):
                        continue  # sent together, in one write
                    try:
                        await self.channel.send(to_twilio)
                    except ChannelClosed:
                        # The caller hung up while frames are still queued to be read: the
                        # pump reads them (the caller's last words, Twilio's `stop`) and
                        # then ends the call.
                        pass
                    to_twilio = []
                case SendToRealtime(event):
                    assert self.realtime is not None
                    try:
                        await self.realtime.send(event)
                    except ChannelClosed as exc:
                        raise _CallEnded("realtime", exc.reason) from None
                case EndCall(by, reason):
                    raise _CallEnded(by, reason)
                case RunTool():
                    self.spawn(self._run_tool(command))
                case HangUp(reason):
                    self._carried_out(await self.services.actions.hang_up(self.call_sid, reason))
                case Transfer(reason):
                    outcome = await self.services.actions.transfer(self.call_sid, reason)
                    if not outcome.call_goes_on:
                        target = self.services.settings.transfer_to or ""
                        self.journal.transfer(self.session.now_ms, target, reason)
                    self._carried_out(outcome)
                case LeaveVoicemail(answered_by):
                    self.journal.answered_by(answered_by)
                    actions = self.services.actions
                    self._carried_out(await actions.leave_voicemail(self.call_sid, answered_by))
                case _:
                    assert_never(command)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Work that must not hold up the audio pumps; it ends with the call."""
        if self._group is None:
            work.close()
            return
        self._group.create_task(work)

    async def _run_tool(self, command: RunTool) -> None:
        tool = self.services.tools.get(command.name)
        if tool is None:
            error = json.dumps({"error": f"no tool named {command.name}"})
            outcome = ToolOutcome(error, "unknown tool", 0)
        else:
            outcome = await tool.run(command.arguments, self.services.settings.tool_timeout_s)
        self.journal.tool(
            command.name,
            command.arguments,
            outcome.output,
            outcome.error,
            outcome.duration_ms,
            command.at_ms,
        )
        await self.execute(self.session.tool_finished(command.call_id, outcome.output))

    def _carried_out(self, outcome: ActionOutcome) -> None:
        """After a REST action, our side of the call ends (unless nothing was attempted)."""
        if outcome.call_goes_on:
            self.log.error("%s", outcome.summary)
            return
        if outcome.problem is not None:
            self.journal.error(self.session.now_ms, f"{outcome.summary}: {outcome.problem}")
        elif outcome.already_over:
            self.log.info("%s: the call had already ended", outcome.summary)
        raise _CallEnded("bot", outcome.summary)
