"""One call, from an admitted stream to its end: two pumps feed the session, and the commands
it returns are carried out. The loop makes no protocol decisions of its own.

The Realtime session may change under a call. When it drops, closes abnormally or expires,
the Realtime pump opens another with back-off, within REALTIME_RECONNECT_S, and the session
re-seeds it (`CallSession.realtime_lost` / `realtime_restored`). A session older than
REALTIME_SESSION_MAX_S is renewed: a new one is opened beside it, seeded at a turn boundary,
and swapped in. The pump reads whichever session is current and skips what a replaced one
still says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, assert_never

from bot.call.admission import STRANGERS, Admission, Admitted, Refused, admit
from bot.call.channels import (
    ChannelClosed,
    DirectRealtimeChannel,
    DirectTwilioChannel,
    RealtimeChannel,
    TwilioChannel,
)
from bot.call.core.history import History, history_from_log
from bot.call.core.messages import (
    Command,
    EndCall,
    HangUp,
    LeaveVoicemail,
    ReplaceRealtime,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    Transfer,
    TurnRecord,
)
from bot.call.core.prompt import render_instructions
from bot.call.core.session import CallSession, CallStats, IdlePolicy, InterruptPolicy, Phase
from bot.call.handover import HANDOVER_AT_MS, HANDOVER_PARAMETER, HANDOVER_SENT_MS, Handover
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
from bot.core.realtime.events import (
    AudioDelta,
    AudioFormat,
    ServerEvent,
    SessionConfig,
    TurnDetection,
)
from bot.core.turn_taking import turn_parameter_problems, turn_taking
from bot.core.twilio import (
    OutboundClear,
    OutboundMedia,
    TwilioEvent,
    TwilioMark,
    TwilioMedia,
    TwilioMessage,
)
from bot.errors import RealtimeProtocolError, RealtimeUnavailable, TwilioProtocolError
from bot.listen.core.fork import Speaker
from bot.listen.stream import LISTEN_MODE, MODE_PARAMETER, ListenedCall, Transcriber
from bot.listen.tracks import TrackTranscriber, drain

__all__ = ["CallServices", "LiveCall", "serve_stream"]

logger = logging.getLogger("bot.call")

POLICY_VIOLATION: Final = 1008
# An independent transcript's tracks: what the caller said, what the bot said as played.
_BESIDE: Final[tuple[tuple[str, Speaker], ...]] = (("inbound", "caller"), ("outbound", "assistant"))
RECONNECT_BACKOFF_S: Final = (0.0, 0.25, 0.5, 1.0, 2.0)  # then 2 s apart, up to the wait
MAX_RECONNECTS: Final = 3  # within RECONNECT_WINDOW_S: a provider that drops every session
RECONNECT_WINDOW_S: Final = 60.0
RENEWAL_RETRY_S: Final = 60.0  # after a renewal could not open its new session
TIME_UP_GRACE_S: Final = 30.0  # for the bot's goodbye at the time limit, then Twilio's
_FILLER_CHUNK: Final = 160 * 50  # one second of μ-law a message
_RECORDING_CAP_S: Final = 4 * 3600  # with no time limit


async def _raise(exc: Exception) -> None:
    raise exc


def _whole(value: str | None) -> int:
    """A whole number from a (token-bound) stream parameter; 0 if it is not one."""
    return int(value) if value is not None and value.isdigit() and len(value) < 16 else 0


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
    handover: Handover | None = None  # calls can move to another instance on SIGTERM
    session: SessionConfig | None = None  # what every call's Realtime session is opened with
    transcriber: Transcriber | None = None  # listened calls' transcription sessions
    # The bot's calls too, in transcription sessions beside the model's (`TRANSCRIBE_AI_CALLS`).
    transcribe_ai_calls: bool = False
    summarize: Callable[[str], Coroutine[Any, Any, None]] | None = None  # after a call

    def after_call(self, call_sid: str) -> None:
        """The call is over and logged: its summary, in the background."""
        if self.summarize is not None:
            self.registry.track_cleanup(asyncio.create_task(self.summarize(call_sid)))


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
        if admitted.start.custom_parameters.get(MODE_PARAMETER) == LISTEN_MODE:
            await _listen(channel, services, admitted)
            return
        call = LiveCall(channel, services, admitted)
        registry.register(call)  # with no wait after admission: one stream per call
        await call.run()


async def _listen(channel: TwilioChannel, services: CallServices, admitted: Admitted) -> None:
    """A fork of a call a person answers: transcribed, never spoken to."""
    if services.transcriber is None:
        admitted.log.error("a listened call's stream, but transcription is not set up")
        await channel.close(1000, "no transcription")
        return
    listened = ListenedCall(channel, services, admitted)
    services.registry.register(listened)
    try:
        await listened.run()
    finally:
        services.registry.unregister(listened)


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


class _SessionLost(Exception):
    """The current Realtime session is of no further use; another must carry the call."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
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
        self._parameters = params
        # A call another instance handed over: no greeting, and its clock goes on.
        self._resumed = HANDOVER_PARAMETER in params
        self._handing_over = False
        self._moved = False
        variables = {k[4:]: v for k, v in params.items() if k.startswith("var_")}
        instructions = params.get("instructions") or None
        if variables or instructions:
            instructions = render_instructions(instructions or settings.instructions, variables)
        for problem in turn_parameter_problems(params):
            self.log.warning("ignored: %s", problem)
        base_turn = services.session.turn_detection if services.session else None
        turn, noise = turn_taking(
            base_turn if isinstance(base_turn, TurnDetection) else TurnDetection(), params
        )
        self.session = CallSession(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            audio=services.audio,
            greeting=None if self._resumed else params.get("greeting") or settings.greeting,
            instructions=instructions,
            turn_detection=turn,
            noise_reduction=noise,
            record_audio=services.recordings is not None or services.transcribe_ai_calls,
            hold_for_human=params.get("amd") == "1" and not self._resumed,
            forward_dtmf=settings.forward_dtmf,
            idle=IdlePolicy(
                int(settings.idle_prompt_s * 1000),
                settings.idle_prompts,
                settings.idle_prompt_message,
                settings.idle_goodbye_message,
            ),
            seed_budget_tokens=settings.seed_tokens,
            append_frames=max(1, settings.append_ms // 20),
            interrupts=InterruptPolicy(
                settings.interruptions == "confirm",
                settings.interrupt_min_ms,
                settings.interrupt_min_words,
                protect_greeting=not settings.greeting_interruptible,
                transcripts=services.session is not None
                and services.session.transcription not in (None, "off"),
            ),
            clock_offset_ms=_whole(params.get(HANDOVER_AT_MS)) if self._resumed else 0,
        )
        recorder = None
        if services.recordings is not None:
            recorder = CallRecorder(
                services.recordings / f"{start.call_sid}-{start.stream_sid}.wav",
                (settings.max_call_s or _RECORDING_CAP_S) * 1000,
            )
        self.journal = CallJournal(
            start.call_sid, services.call_log, services.metrics, self.log, recorder
        )
        if self._resumed:
            self.journal.resumed(start.stream_sid)
        else:
            self.journal.started(start.stream_sid, params, services.label)
        self._transcripts: list[TrackTranscriber] = []
        self._transcript_tasks: list[asyncio.Task[None]] = []
        if services.transcribe_ai_calls and services.transcriber is not None:
            self._transcripts = [
                TrackTranscriber(
                    track,
                    speaker,
                    services.transcriber,
                    services.call_log,
                    start.call_sid,
                    self.log,
                    self._independent_turn,
                )
                for track, speaker in _BESIDE
            ]
            tracks = {track.name: track for track in self._transcripts}
            self.journal.tap = lambda name, ulaw, at_ms: tracks[name].push(ulaw, at_ms)
        self._realtime: RealtimeChannel | None = None
        # Direct delivery (bot/call/channels.py): both sockets write at once, so events are
        # handled in their read callbacks. `_later` carries out, in a task, what a callback
        # cannot (a hang-up, a tool); the pumps wait for it before their next event.
        self._direct_twilio = channel if isinstance(channel, DirectTwilioChannel) else None
        self._direct_realtime: DirectRealtimeChannel | None = None
        self._later: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._media_arrived, self._media_ms = time.monotonic(), 0
        self._session_opened = time.monotonic()  # of the current Realtime session
        self._renewing = False
        self._renew_after = 0.0  # monotonic; a failed renewal waits before the next try
        self._reconnects: list[float] = []

    @property
    def realtime(self) -> RealtimeChannel | None:
        """The current Realtime session; None while another is being opened."""
        return self._realtime

    @realtime.setter
    def realtime(self, channel: RealtimeChannel | None) -> None:
        if self._direct_realtime is not None:
            self._direct_realtime.deliver_directly(None)  # what it still says is moot
        self._realtime = channel
        direct = None
        if isinstance(channel, DirectRealtimeChannel) and self._direct_twilio is not None:
            direct = channel
            direct.deliver_directly(self._realtime_now)
        self._direct_realtime = direct
        if self._direct_twilio is not None:
            self._direct_twilio.deliver_directly(self._media_now if direct else None)

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

    async def hand_over(self) -> None:
        """Move the call to another instance: at a turn boundary if one comes within
        HANDOVER_WAIT_S, otherwise cutting the answer at what was heard. The call stays
        here if it cannot move."""
        handover, session, cluster = self.services.handover, self.session, self.services.cluster
        if handover is None or self._handing_over or self.realtime is None:
            return
        self._handing_over = True
        deadline = time.monotonic() + handover.wait_s
        while True:
            if self._stop.is_set() or session.phase is not Phase.CONVERSING:
                return
            self._tick()
            if session.at_turn_boundary or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        forced = not session.at_turn_boundary
        if forced:
            await self.execute(session.fall_silent())
        nonce = handover.nonce()
        try:
            marked = await asyncio.wait_for(cluster.mark_moving(self.call_sid, nonce), 2)
        except Exception as exc:  # the database: the call stays here
            self.log.warning("cannot hand the call over (%s)", type(exc).__name__)
            marked = False
        if not marked:
            self._handing_over = False
            return
        self.journal.record(session.take_reports(), session.now_ms)
        self.journal.call_log.event(
            self.call_sid,
            session.now_ms,
            "handover",
            "moving to another instance: this one is stopping"
            + (" (the answer playing was cut)" if forced else ""),
            {"forced": forced, "direction": "out"},
        )
        with contextlib.suppress(Exception):  # the next instance reads the log
            await asyncio.wait_for(self.services.call_log.flush(), 2)
        twiml = handover.twiml(self.call_sid, self._parameters, nonce, session.now_ms)
        problem = await handover.move(self.call_sid, twiml)
        if problem is not None:
            self.log.error("could not hand the call over: %s", problem)
            with contextlib.suppress(Exception):
                await cluster.unmark_moving(self.call_sid)
            self._handing_over = False
            return
        self._moved = True  # Twilio ends this stream; the next one is another instance's
        self.log.info("call handed over: Twilio moves it to another instance")

    def moved(self) -> None:
        if self._handing_over:
            self._moved = True
            self.end("moved to another instance")

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
            self._transcript_tasks = [
                asyncio.create_task(self._transcribe_beside(track)) for track in self._transcripts
            ]
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    if self._resumed:
                        await self.execute(await self._resume())
                    else:
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
            # The pumps are gone: nothing more is handled in a read callback either.
            if self._direct_realtime is not None:
                self._direct_realtime.deliver_directly(None)
                self._direct_realtime = None
            if self._direct_twilio is not None:
                self._direct_twilio.deliver_directly(None)
            registry.unregister(self)
            # Quart may cancel this task again while it cleans up (the caller's socket went
            # away); the clean-up runs in its own task so it always completes.
            cleanup = asyncio.create_task(self._finish(end_by, end_reason, started))
            registry.track_cleanup(cleanup)
            await asyncio.shield(cleanup)

    def _independent_turn(self, record: TurnRecord) -> None:
        """A line of the independent transcript: an event beside the model's own turns."""
        self.services.call_log.event(
            self.call_sid,
            record.started_ms,
            "transcript",
            f"{record.speaker}: {record.text}",
            {
                "speaker": record.speaker,
                "text": record.text,
                "started_ms": record.started_ms,
                "ended_ms": record.ended_ms,
            },
        )

    async def _transcribe_beside(self, track: TrackTranscriber) -> None:
        failed = await track.run()
        if failed is not None:  # the call goes on; only its second transcript stops
            message = f"independent {track.name} transcript stopped: {failed}"
            self.log.warning("%s", message)
            self.services.call_log.event(self.call_sid, None, "error", message)

    async def _resume(self) -> list[Command]:
        """The conversation so far, from the shared call log, for a call moved here."""
        history = History()
        try:
            logged = await asyncio.wait_for(
                self.services.call_log.records.get_call(self.call_sid), 2
            )
        except Exception as exc:  # the call goes on, without its past
            self.log.warning("could not read the call's past (%s)", type(exc).__name__)
            logged = None
        if logged is not None:
            history = history_from_log(logged["turns"], logged["events"])
        commands = self.session.resume(history)
        sent_ms = _whole(self._parameters.get(HANDOVER_SENT_MS))
        gap_ms = max(0, int(time.time() * 1000) - sent_ms) if sent_ms else None
        self.journal.session_changed(
            self.session.now_ms,
            "handover",
            "carried on here from another instance"
            + (f", {gap_ms} ms after the move was asked" if gap_ms is not None else ""),
            {"direction": "in", "gap_ms": gap_ms, "entries": len(history)},
        )
        return commands

    async def _finish(self, end_by: str, end_reason: str, started: float) -> None:
        if self.realtime is not None:
            await self.realtime.close()
        if self._transcripts:
            self.journal.record(self.session.take_reports(), self.session.now_ms)
            with contextlib.suppress(Exception):
                await drain(self._transcripts)
            for track in self._transcripts:
                await track.close()
            await asyncio.wait(self._transcript_tasks, timeout=2)
        if self._moved:  # another instance carries the call: it is not over
            self.journal.record(self.session.take_reports(), self.session.now_ms)
            self.log.info(
                "call moved to another instance after %.1f s here", time.monotonic() - started
            )
            return
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
        self.services.after_call(self.call_sid)

    async def _await_stop(self) -> None:
        await self._stop.wait()
        raise _CallEnded("bridge", self._stop_reason)

    async def _watch(self, started: float) -> None:
        """Ends a stream that went quiet and a call that reached its time limit, and starts
        renewing an old Realtime session. Checking a few times a second costs nothing per
        frame."""
        settings = self.services.settings
        stats = self.session.stats
        frames, quiet_since = stats.frames_in, started
        tick = min(0.25, settings.stream_idle_s / 4)
        said_time_up = False
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if stats.frames_in != frames:
                frames, quiet_since = stats.frames_in, now
            elif now - quiet_since >= settings.stream_idle_s:
                raise _CallEnded("bridge", f"no audio from Twilio for {settings.stream_idle_s:g} s")
            limit = settings.max_call_s
            if limit and now - started >= limit and not said_time_up:
                said_time_up = True
                self.log.info("time limit of %d s reached", limit)
                self._tick()
                await self.execute(self.session.time_up(settings.time_limit_message))
            if limit and now - started >= limit + (TIME_UP_GRACE_S if said_time_up else 0):
                self._carried_out(await self.services.actions.time_up(self.call_sid))
            renew_at = settings.session_max_s
            if (
                renew_at
                and not self._renewing
                and self.realtime is not None
                and now - self._session_opened >= renew_at
                and now >= self._renew_after
            ):
                self._renewing = True
                self.spawn(self._renew())

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
            except ChannelClosed as exc:
                raise _CallEnded("caller", exc.reason) from None
            except TwilioProtocolError as exc:
                self.errors.report("twilio", exc)
                continue
            await self._after_later()
            if type(event) is TwilioMedia:
                commands = session.handle_twilio(event)
                if commands or session.has_reports:  # one frame in two has neither
                    await self.execute(commands)
                self._heard(event)
            else:
                self._tick()
                await self.execute(session.handle_twilio(event))

    def _heard(self, frame: TwilioMedia) -> None:
        self._media_arrived, self._media_ms = time.monotonic(), self.session.now_ms
        self.journal.caller_audio(frame.ulaw, self.session.now_ms)

    # ---- direct delivery (see `__init__`) ------------------------------------------------

    def _media_now(self, event: TwilioEvent) -> bool:
        """A media frame or a mark's echo, in the media socket's read callback; the rest
        (`start`, `dtmf`, `stop`) waits for the pump."""
        kind = type(event)
        if (kind is not TwilioMedia and kind is not TwilioMark) or self._busy():
            return False
        try:
            if kind is TwilioMark:
                self._tick()  # a frame sets the clock itself
            self._execute_now(self.session.handle_twilio(event))
            if type(event) is TwilioMedia:
                self._heard(event)
        except Exception as exc:  # a bug: the call ends as if a pump had raised it
            self._defer(_raise(exc))
        return True

    def _realtime_now(self, event: ServerEvent) -> bool:
        """Model audio, in the Realtime socket's read callback; the rest waits for the pump."""
        if type(event) is not AudioDelta or self._busy():
            return False
        try:
            self._tick()
            self._execute_now(self.session.handle_realtime(event))
        except Exception as exc:
            self._defer(_raise(exc))
        return True

    def _execute_now(self, commands: list[Command]) -> None:
        """`execute`, synchronously: socket messages are written at once; from the first
        command that needs more (a hang-up, a tool, a closed socket), the rest runs in
        `_later`."""
        session = self.session
        if session.has_reports:
            self.journal.record(session.take_reports(), session.now_ms)
        to_twilio: list[TwilioMessage] = []
        for index, command in enumerate(commands):
            if type(command) is SendToTwilio:
                to_twilio.append(command.message)
                continue
            if to_twilio:
                self._send_to_twilio_now(to_twilio)
                to_twilio = []
            realtime = self._direct_realtime
            if type(command) is SendToRealtime and realtime is not None:
                try:
                    realtime.send_now(command.event)
                    continue
                except ChannelClosed:
                    pass  # `execute` decides, as for any closed session
            self._defer(self.execute(commands[index:]))
            return
        if to_twilio:
            self._send_to_twilio_now(to_twilio)

    def _send_to_twilio_now(self, messages: list[TwilioMessage]) -> None:
        assert self._direct_twilio is not None
        with contextlib.suppress(ChannelClosed):  # as in `_send_to_twilio`
            self._direct_twilio.send_now(messages)

    def _busy(self) -> bool:
        """Commands of an earlier event are still being carried out: events wait their turn."""
        return self._later is not None and not self._later.done()

    def _defer(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None  # direct delivery only reaches a running call
        try:
            self._later = self._group.create_task(work)
        except RuntimeError:  # the call is ending: its task group takes nothing more
            work.close()

    async def _after_later(self) -> None:
        """Wait until the commands a read callback left are carried out (it ends the call if
        they raise)."""
        later = self._later
        if later is not None:
            await asyncio.wait((later,))
            if self._later is later:
                self._later = None

    async def _pump_realtime(self) -> None:
        """Events of the current Realtime session; a lost session is replaced here."""
        session = self.session
        while True:
            realtime = self.realtime
            assert realtime is not None  # only this pump's own reconnect unsets it
            try:
                event = await realtime.receive()
                if realtime is not self.realtime:
                    continue  # a session replaced since: what it still says is moot
                await self._after_later()
                self._tick()
                await self.execute(session.handle_realtime(event))
            except ChannelClosed as exc:
                if realtime is self.realtime:
                    await self._reconnect(exc.reason)
            except _SessionLost as lost:
                await self._reconnect(lost.reason)
            except RealtimeProtocolError as exc:
                self.errors.report("realtime", exc)

    async def _reconnect(self, reason: str) -> None:
        """Open a new session within REALTIME_RECONNECT_S and re-seed it; the caller hears
        silence or the filler meanwhile. Ends the call if that cannot be done."""
        settings, services = self.services.settings, self.services
        wait_s = settings.reconnect_s
        lost_at = time.monotonic()
        self._reconnects = [t for t in self._reconnects if lost_at - t < RECONNECT_WINDOW_S]
        if not wait_s or len(self._reconnects) >= MAX_RECONNECTS:
            why = "" if not wait_s else f" ({MAX_RECONNECTS} reconnects within a minute)"
            raise _CallEnded("realtime", reason + why)
        self._reconnects.append(lost_at)
        self.log.warning("Realtime session lost (%s): reconnecting", reason)
        old, self.realtime = self.realtime, None
        self._tick()
        await self.execute(self.session.realtime_lost())
        if old is not None:
            self.spawn(old.close())
        filler = settings.reconnect_filler
        if filler:
            await self._send_filler(filler)
        attempt, last = 0, reason
        while True:
            attempt += 1
            left = lost_at + wait_s - time.monotonic()
            try:
                async with asyncio.timeout(max(0.05, left)):
                    channel = await services.registry.dial()
                break
            except RealtimeUnavailable as exc:
                last = str(exc)
                if exc.rejected:
                    services.metrics.session_changes.labels(kind="reconnect_failed").inc()
                    raise _CallEnded("realtime", f"{reason}; reconnecting refused: {exc}") from None
            except TimeoutError:
                last = "no session within the reconnect wait"
            left = lost_at + wait_s - time.monotonic()
            if left < 0.05:
                services.metrics.session_changes.labels(kind="reconnect_failed").inc()
                raise _CallEnded(
                    "realtime", f"{reason}; no new session within {wait_s:g} s: {last}"
                )
            await asyncio.sleep(min(left, RECONNECT_BACKOFF_S[min(attempt, 4)]))
        self.realtime = channel
        self._session_opened = time.monotonic()
        self._tick()
        commands = self.session.realtime_restored()
        if filler:
            commands.insert(0, SendToTwilio(OutboundClear(self.session.stream_sid)))
        await self.execute(commands)
        gap_s = time.monotonic() - lost_at
        services.metrics.reconnect_gap.observe(gap_s)
        self.journal.session_changed(
            self.session.now_ms,
            "reconnect",
            f"{reason}; a new session carries the call after {gap_s * 1000:.0f} ms "
            f"({attempt} attempt{'s' if attempt != 1 else ''})",
            {"reason": reason, "gap_ms": round(gap_s * 1000), "attempts": attempt},
        )

    async def _send_filler(self, ulaw: bytes) -> None:
        sid = self.session.stream_sid
        messages: list[TwilioMessage] = [
            OutboundMedia(sid, ulaw[start : start + _FILLER_CHUNK])
            for start in range(0, len(ulaw), _FILLER_CHUNK)
        ]
        try:
            await self.channel.send(messages)
        except ChannelClosed:
            pass

    async def _renew(self) -> None:
        """A new session beside the old one, swapped in at a turn boundary (or at the hard
        limit, cut like a reconnect)."""
        settings = self.services.settings
        try:
            try:
                channel = await self.services.registry.dial()
            except RealtimeUnavailable as exc:
                self.log.warning("could not renew the Realtime session: %s", exc)
                self._renew_after = time.monotonic() + RENEWAL_RETRY_S
                return
            opened = time.monotonic()
            try:
                while True:
                    old = self.realtime
                    if old is None or self.session.phase is Phase.ENDED:
                        await channel.close()  # a reconnect took over, or the call is ending
                        return
                    self._tick()
                    forced = time.monotonic() - self._session_opened >= settings.session_limit_s
                    if self.session.at_turn_boundary or forced:
                        break
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                await asyncio.shield(channel.close())  # the call ended while waiting
                raise
            if forced:
                commands = self.session.realtime_lost()
                self.realtime = channel
                commands += self.session.realtime_restored()
            else:
                commands = self.session.renewal_seed()
                self.realtime = channel
            age_s = time.monotonic() - self._session_opened
            self._session_opened = opened
            await self.execute(commands)
            self.journal.session_changed(
                self.session.now_ms,
                "renewal",
                f"session renewed after {age_s:.0f} s"
                + (" at its hard limit (an answer was cut)" if forced else " at a turn boundary"),
                {"age_s": round(age_s, 1), "forced": forced},
            )
            await old.close()
        finally:
            self._renewing = False

    async def execute(self, commands: list[Command]) -> None:
        """Record what happened, then carry out the commands, in order. Messages to Twilio
        in a row go in one write.

        Socket messages, nearly every command, are told apart by their type first: a `match`
        of class patterns costs microseconds a command, at some 80 commands a second."""
        session = self.session
        if session.has_reports:
            self.journal.record(session.take_reports(), session.now_ms)
        to_twilio: list[TwilioMessage] = []
        for command in commands:
            if type(command) is SendToTwilio:
                to_twilio.append(command.message)
                continue
            if to_twilio:
                await self._send_to_twilio(to_twilio)
                to_twilio = []
            if type(command) is SendToRealtime:
                realtime = self.realtime
                if realtime is None:
                    continue  # reconnecting: the new session is seeded from history
                try:
                    await realtime.send(command.event)
                except ChannelClosed as exc:
                    if not self.services.settings.reconnect_s:
                        raise _CallEnded("realtime", exc.reason) from None
                    # The Realtime pump sees the close too, and reconnects.
            else:
                await self._carry_out(command)
        if to_twilio:
            await self._send_to_twilio(to_twilio)

    async def _send_to_twilio(self, messages: list[TwilioMessage]) -> None:
        try:
            await self.channel.send(messages)
        except ChannelClosed:
            # The caller hung up while frames are still queued to be read: the pump reads
            # them (the caller's last words, Twilio's `stop`) and then ends the call.
            pass

    async def _carry_out(self, command: Command) -> None:
        """Any command but a socket message (`execute` sends those)."""
        match command:
            case SendToTwilio() | SendToRealtime():
                await self.execute([command])
            case ReplaceRealtime(reason):
                raise _SessionLost(reason)
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
        await self.execute(
            self.session.tool_finished(command.call_id, outcome.output, outcome.disclosure)
        )

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
