"""The call session: events from Twilio and the Realtime server in, commands and reports out.

Theory of operation
-------------------
A session exists once Twilio's `start` has been verified. Its phase is explicit:

    AWAITING_PERSON --(verdict: a person, or the AMD deadline)--> CONVERSING
    AWAITING_PERSON --(verdict: a machine)----------------------> ENDED  (LeaveVoicemail)
    CONVERSING --(end_call / transfer_call from the model)------> WINDING_DOWN
    WINDING_DOWN --(last words played, or the deadline)--------> ENDED (HangUp) or
                                                                 CONVERSING (Transfer: the
                                                                 shell ends the call once
                                                                 Twilio has it)
    any --(Twilio `stop`, or a fatal Realtime error)------------> ENDED  (EndCall)

Only outbound calls with answering-machine detection start AWAITING_PERSON: caller audio
does not reach the model and the greeting waits. In ENDED every event is ignored.

Caller audio: each `media` frame is transcoded and appended to the Realtime input buffer
at once (latency matters more than the per-message overhead). Model audio goes through
the playback ledger (`playback.py`), which knows what the caller has heard.

Barge-in (`input_audio_buffer.speech_started`):
  * if audio is still queued at Twilio, send `clear`;
  * for each item the caller has not heard completely (or whose response is still being
    generated), send `conversation.item.truncate` at the heard position, clamped to the
    audio received for the item (the server rejects longer ones);
  * drop every later delta of the interrupted response, and forget the partial chunk and
    the output filter's history, so nothing stale leaks into the next answer.
The server cancels the response itself (`interrupt_response: true`); its `response.done`
with status `cancelled` is expected, not an error.

Losing the Realtime session (`realtime_lost`): what Twilio still queues is cleared and each
answer is cut at what the caller heard, as in a barge-in; the caller's audio waits, with
the speech in progress when the link broke. `realtime_restored` seeds the new session with
the conversation as heard (`history.py`), then that audio, then asks for the answer that
was due. `renewal_seed` seeds a session opened in parallel at a turn boundary
(`at_turn_boundary`). An expired session asks the shell for another (`ReplaceRealtime`).

Idle callers: after `IdlePolicy.after_ms` of silence at a turn boundary the bot asks
whether the caller is there, at most `prompts` times, then says goodbye and hangs up.

Pause, then decide (`InterruptPolicy.confirm`; the session is opened with
`create_response` and `interrupt_response` off, so the bridge owns responses): speech over
an answer clears Twilio at once but keeps the unheard audio (`Playback.pause`). The caller's
own audio tells how long the sound lasts. At least `min_ms` of it, or a transcript with
`min_words` words that are not fillers (from the transcript's deltas as they come),
confirms the interruption: the answer is cut and truncated at the heard position, and
cancelled, as in instant mode. A shorter sound (a cough, an "uh-huh") resumes the answer
from the heard position; once its turn is over and its transcript has too few words (or
`TRANSCRIPT_WAIT_MS` passed), the server's committed item for it is deleted, so the model
neither answers it nor keeps it. Every real caller turn gets its `response.create` from the
bridge when the server commits it.

Responses: a `response.create` asked for while a response is active waits for its
`response.done`. Custom tools run in the shell (`RunTool`); their result comes back through
`tool_finished`. Turns for the call log are kept by `turns.py`; actions by `actions.py`.

The session never awaits, sleeps, reads a clock or touches a socket: its clock is Twilio's
media timestamps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, Literal, assert_never

from bot.call.core.actions import (
    ACTION_DEADLINE_MS,
    AMD_DEADLINE_MS,
    BUILTIN_TOOLS,
    TOOL_DONE_NOTE,
    PendingAction,
    is_machine,
)
from bot.call.core.history import History
from bot.call.core.interrupts import (
    LISTEN_AFTER_SOUND_MS,
    SOUND_ENDS_AFTER_MS,
    TRANSCRIPT_WAIT_MS,
    InterruptPolicy,
    Pause,
    SoundMeter,
)
from bot.call.core.messages import (
    Command,
    DigitPressed,
    EndCall,
    FalseInterruption,
    HangUp,
    IdlePrompted,
    Interrupted,
    LeaveVoicemail,
    Notice,
    PlayedAudio,
    ReplaceRealtime,
    Report,
    ResponseFinished,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    ToolRecord,
    TurnRecord,
)
from bot.call.core.playback import Playback, PlaybackStats
from bot.call.core.prompt import greeting_request, say_request
from bot.call.core.turns import Turns
from bot.core.codec import PassthroughTranscoder, Pcm16Transcoder, Transcoder
from bot.core.realtime import events as rt
from bot.core.twilio import (
    TwilioConnected,
    TwilioDtmf,
    TwilioEvent,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)

__all__ = [
    "FATAL_ERROR_CODES",
    "MAX_CLOCK_STEP_MS",
    "CallSession",
    "CallStats",
    "IdlePolicy",
    "InterruptPolicy",
    "Phase",
]

# How far one media frame may move the call's clock; Twilio's step is 20 ms.
MAX_CLOCK_STEP_MS: Final = 2_000

# Error codes after which the Realtime session is of no further use for this call.
FATAL_ERROR_CODES: Final = frozenset(
    {
        "beta_api_shape_disabled",
        "invalid_api_key",
        "insufficient_quota",
        "model_not_found",
    }
)
# Error codes after which another session carries on the call.
RENEW_ERROR_CODES: Final = frozenset({"session_expired"})
_QUIET_ERROR_CODES: Final = frozenset({"response_cancel_not_active"})
MAX_HELD_AUDIO_MS: Final = 15_000  # caller audio kept for a new session: speech, then the gap
_LEAD_IN_FRAMES: Final = 50  # before speech was detected: its start, and the VAD's prefix
ANSWER_EXPECTED_MS: Final = 3_000  # after the caller's turn ends, a response is on its way
DEFAULT_SEED_BUDGET_TOKENS: Final = 4_000


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    """What the bot does when the caller goes quiet; `after_ms` 0 switches it off."""

    after_ms: int = 0
    prompts: int = 2
    prompt: str = "Are you still there?"
    goodbye: str = "I haven't heard from you, so I'll end the call now. Goodbye."


class Phase(Enum):
    AWAITING_PERSON = "awaiting a person"
    CONVERSING = "conversing"
    WINDING_DOWN = "winding down"
    ENDED = "ended"


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    interruptions: int = 0
    false_interruptions: int = 0
    deltas_dropped: int = 0
    usage_total_tokens: int = 0
    playback: PlaybackStats = field(default_factory=PlaybackStats)


@dataclass(eq=False)  # identity semantics: sessions live in sets
class CallSession:
    """One call's bridge logic. Feed events to `handle_*`, run the commands returned, and
    read what happened from `take_reports`."""

    stream_sid: str
    call_sid: str
    audio: rt.AudioFormat
    greeting: str | None = None
    instructions: str | None = None  # per-call instructions, sent at the start
    # A call's own turn detection and noise reduction (an outbound call's choice).
    turn_detection: rt.TurnDetection | None = None
    noise_reduction: rt.NoiseReduction | Literal["off"] | None = None
    record_audio: bool = False
    hold_for_human: bool = False  # outbound with answering-machine detection
    forward_dtmf: bool = True
    transcoder: Transcoder | None = None  # another codec for PCM16 (the benchmark's ratecv)
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    interrupts: InterruptPolicy = field(default_factory=InterruptPolicy)
    seed_budget_tokens: int = DEFAULT_SEED_BUDGET_TOKENS
    append_frames: int = 1  # Twilio frames (20 ms each) per append to the model
    clock_offset_ms: int = 0  # a call moved here from another instance: its clock so far

    def __post_init__(self) -> None:
        transcoder = self.transcoder
        if transcoder is None:
            passthrough = self.audio is rt.AudioFormat.G711_ULAW
            transcoder = PassthroughTranscoder() if passthrough else Pcm16Transcoder()
        self._transcoder: Transcoder = transcoder
        self.stats = CallStats()
        self.playback = Playback(
            self.stream_sid,
            transcoder,
            self.audio.bytes_per_ms,
            self.record_audio,
            self.stats.playback,
            resumable=self.interrupts.confirm,
        )
        self.turns = Turns()
        self.phase = Phase.AWAITING_PERSON if self.hold_for_human else Phase.CONVERSING
        # Call time: the newest Twilio media timestamp, or later (see below).
        self.now_ms = self.clock_offset_ms
        self._media_ms = self.clock_offset_ms  # the newest media timestamp itself
        self._active_response: str | None = None
        self._response_wanted = False
        self._wanted_instructions: str | None = None  # of the response that waits
        self._dropped_responses: set[str] = set()
        self._pending: PendingAction | None = None
        self._reports: list[Report] = []
        self.history = History()
        self.linked = True  # a Realtime session is there to take events
        self._caller_speaking = False
        self._heard_speech: deque[bytes] = deque(maxlen=MAX_HELD_AUDIO_MS // 20)  # μ-law
        self._held_audio: deque[bytes] = deque(maxlen=MAX_HELD_AUDIO_MS // 20)  # for a new one
        self._unsent: list[bytes] = []  # frames that wait to fill an append (μ-law)
        self._answer_due_until_ms = 0
        self._tools_running: set[str] = set()
        self._quiet_since_ms = self.clock_offset_ms
        self._idle_prompts = 0
        self._pause: Pause | None = None
        # Protected speech (pause-then-decide only): answers the caller cannot interrupt;
        # their audio still reaches the model, which answers once they have played.
        self._protect_next = False
        self._protected_responses: set[str] = set()
        self._protected_items: set[str] = set()
        self._noise_items: set[str] = set()  # committed items of false interruptions

    def advance_clock(self, now_ms: int) -> None:
        """Move the clock between media frames, from the shell's measure of the time since
        the newest one. Frames come every 20 ms, and a barge-in needs better: the heard
        position inside a message is the time it has been playing. The clock never runs
        back, nor more than `MAX_CLOCK_STEP_MS` past the newest frame."""
        self.now_ms = max(self.now_ms, min(now_ms, self._media_ms + MAX_CLOCK_STEP_MS))

    @property
    def has_reports(self) -> bool:
        return bool(self._reports)

    def take_reports(self) -> list[Report]:
        reports, self._reports = self._reports, []
        return reports

    def _notice(self, level: Literal["debug", "info", "warning"], message: str) -> None:
        self._reports.append(Notice(level, message, self.now_ms))

    # ---- from the shell --------------------------------------------------------------------

    def begin(self) -> list[Command]:
        """Commands to run once both sockets are up: per-call instructions and the greeting."""
        commands = self._call_instructions()
        if self.phase is Phase.AWAITING_PERSON:
            return commands  # the greeting waits for a person
        return commands + self._greet()

    def answered(self, answered_by: str) -> list[Command]:
        """Answering-machine detection's verdict (Twilio's `AnsweredBy`)."""
        if self.phase is not Phase.AWAITING_PERSON:
            return []
        if is_machine(answered_by):
            self.phase = Phase.ENDED
            return [LeaveVoicemail(answered_by)]
        self.phase = Phase.CONVERSING
        return self._greet()

    def say(self, words: str) -> list[Command]:
        """An operator's words for the caller (the API's or the CLI's "say this"): the model
        speaks them next, after the answer it is giving."""
        if self.phase is not Phase.CONVERSING:
            return []
        return self._respond(say_request(words))

    def tool_finished(
        self, call_id: str, output: str, disclosure: str | None = None
    ) -> list[Command]:
        """The result of a `RunTool`, for the model, which then carries on: by saying the
        tool's `disclosure` exactly, if it has one, protected from interruptions."""
        self._tools_running.discard(call_id)
        self._quiet_since_ms = self.now_ms
        if self.phase is Phase.ENDED:
            return []
        self.history.tool_answered(call_id, output)
        if not self.linked:
            self._response_wanted = True  # the output is seeded into the next session
            return []
        output_item = SendToRealtime(rt.CreateItem(_function_output(call_id, output)))
        if disclosure is None:
            return [output_item, *self._respond()]
        if self.interrupts.confirm:
            self._protect_next = True
        return [output_item, *self._respond(say_request(disclosure))]

    def time_up(self, words: str) -> list[Command]:
        """The call reached its time limit: the bot says `words`, then hangs up."""
        if self.phase is not Phase.CONVERSING:
            return []
        return self._say_and_hang_up(words, "the call reached its time limit")

    # ---- the Realtime session changes ------------------------------------------------------

    @property
    def at_turn_boundary(self) -> bool:
        """Nobody is speaking or about to: no response active or due, nothing playing, no
        tool running, the caller silent. A session can be swapped here unnoticed."""
        return (
            self.linked
            and self.phase is Phase.CONVERSING
            and self._active_response is None
            and not self._response_wanted
            and not self._caller_speaking
            and not self._tools_running
            and self._pending is None
            and self._pause is None
            and self.now_ms >= self._answer_due_until_ms
            and self.playback.idle
        )

    def realtime_lost(self) -> list[Command]:
        """The session is gone and the shell is opening another: stop what can no longer be
        finished, and keep the caller's audio for the new session."""
        if not self.linked or self.phase is Phase.ENDED:
            return []
        self.linked = False
        self._pause = None
        cut_short = self._active_response is not None
        commands = self._cut_answers(truncate=False)
        if cut_short:
            self._response_wanted = True  # the model carries on after the cut
        self._active_response = None
        self._dropped_responses.clear()
        self._answer_due_until_ms = 0
        self._held_audio.clear()
        self._held_audio.extend(self._heard_speech)  # the unsent frames are in it too
        self._unsent.clear()
        return commands

    def realtime_restored(self) -> list[Command]:
        """A new session is open: seed it, give it the caller's waiting audio, and ask for
        the answer that was due."""
        if self.linked or self.phase is Phase.ENDED:
            return []
        self.linked = True
        commands = self._seed()
        held = b"".join(self._held_audio)
        self._held_audio.clear()
        if held:
            audio = self._transcoder.to_model(held)
            commands.append(SendToRealtime(rt.AppendAudio(audio)))
        if self._response_wanted and not self._tools_running and not self._caller_speaking:
            self._response_wanted = False
            instructions, self._wanted_instructions = self._wanted_instructions, None
            commands.append(SendToRealtime(rt.CreateResponse(instructions, speak=True)))
        return commands

    def renewal_seed(self) -> list[Command]:
        """The seed of a session opened in parallel, taken at a turn boundary."""
        return self._seed()

    def resume(self, history: History) -> list[Command]:
        """Instead of `begin`, for a call moved here from another instance: its session is
        seeded with the conversation so far, and nobody greets again."""
        self.history = history
        return self._seed()

    def fall_silent(self) -> list[Command]:
        """Stop playing at once, cut each answer at what was heard, and ignore the rest of
        the active response (the call is about to move)."""
        commands = self._cut_answers(truncate=False)
        if self._active_response is not None:
            self._dropped_responses.add(self._active_response)
        return commands

    def _seed(self) -> list[Command]:
        commands = self._call_instructions()
        for item in self.history.seed(self.seed_budget_tokens):
            commands.append(SendToRealtime(rt.CreateItem(item)))
        return commands

    def _call_instructions(self) -> list[Command]:
        """The call's own session settings, over the ones every call gets."""
        if not self.instructions and self.turn_detection is None and self.noise_reduction is None:
            return []
        config = rt.SessionConfig(
            instructions=self.instructions or None,
            turn_detection=self.turn_detection,
            noise_reduction=self.noise_reduction,
        )
        return [SendToRealtime(rt.SessionUpdate(config))]

    # ---- from Twilio -----------------------------------------------------------------------

    def handle_twilio(self, event: TwilioEvent) -> list[Command]:
        if self.phase is Phase.ENDED:
            return []
        match event:
            case TwilioMedia():
                return self._caller_audio(event)
            case TwilioMark(name):
                return self._mark_played(name)
            case TwilioDtmf(digit):
                self._reports.append(DigitPressed(digit, self.now_ms))
                if not self.forward_dtmf or self.phase is Phase.AWAITING_PERSON:
                    return []
                text = f"[The caller pressed {digit} on the phone keypad]"
                self.history.note(text)
                self._quiet_since_ms = self.now_ms
                if not self.linked:
                    self._response_wanted = True
                    return []
                return [SendToRealtime(rt.CreateItem(_user_text(text))), *self._respond()]
            case TwilioStop():
                self.phase = Phase.ENDED
                return [EndCall("caller", "caller hung up")]
            case TwilioConnected() | TwilioStart():
                # The stream is already bound: a repeat changes nothing.
                self._notice("debug", f"ignored {type(event).__name__} after start")
                return []
            case _:
                assert_never(event)

    def _caller_audio(self, event: TwilioMedia) -> list[Command]:
        stats = self.stats
        stamped = event.timestamp_ms if event.timestamp_ms is not None else stats.frames_in * 20
        stamped += self.clock_offset_ms
        # The clock never runs back and never leaps: a forged timestamp must not stretch the
        # recording or the call log (a lost packet or two is a short gap).
        self.now_ms = min(max(stamped, self.now_ms), self.now_ms + MAX_CLOCK_STEP_MS)
        self._media_ms = self.now_ms
        stats.frames_in += 1
        if self._pending is not None:
            action = self._act_when_drained()  # the deadline is measured in call time
            if action:
                return action
        if self.phase is Phase.AWAITING_PERSON:
            if self.now_ms < AMD_DEADLINE_MS:
                return []  # the model must not answer a voicemail greeting
            self.phase = Phase.CONVERSING
            self._notice("info", "no answering-machine verdict in time: greeting anyway")
            return self._greet()
        ulaw = event.ulaw
        if not self.linked:
            self._held_audio.append(ulaw)
            return []
        decided: list[Command] = []
        if self._pause is not None:
            decided = self._hear_during_pause(ulaw)
        # Kept for a session that may replace this one: the speech in progress, and a lead-in.
        heard = self._heard_speech
        heard.append(ulaw)
        if not self._caller_speaking and len(heard) > _LEAD_IN_FRAMES:
            heard.popleft()
        # Fewer, larger appends: each message costs more than its audio (see AUDIO_APPEND_MS).
        unsent = self._unsent
        unsent.append(ulaw)
        commands: list[Command] = []
        if len(unsent) >= self.append_frames:
            audio = self._transcoder.to_model(ulaw if len(unsent) == 1 else b"".join(unsent))
            unsent.clear()
            commands.append(SendToRealtime(rt.AppendAudio(audio)))
        if decided:
            commands += decided
        idle = self.idle.after_ms
        if idle and self.now_ms - self._quiet_since_ms >= idle and self.at_turn_boundary:
            commands += self._caller_idle()
        return commands

    def _mark_played(self, name: str) -> list[Command]:
        heard = self.playback.acknowledge(name, self.now_ms)
        if heard is None:
            return []  # flushed by a clear, or not ours
        for item, first, played_ms in heard.items:
            records = self.turns.answer_heard(
                item.item_id, first, item.fully_heard, self.now_ms, played_ms
            )
            for record in records:
                self._turn(record)
        if heard.audio:
            self._reports.append(PlayedAudio(heard.audio, self.now_ms))
        self._quiet_since_ms = self.now_ms
        return self._act_when_drained()

    # ---- from the Realtime server ----------------------------------------------------------

    def handle_realtime(self, event: rt.ServerEvent) -> list[Command]:
        if self.phase is Phase.ENDED:
            return []
        match event:
            case rt.AudioDelta():
                return self._audio_delta(event)
            case rt.TranscriptDelta(response_id, item_id, delta):
                if response_id not in self._dropped_responses:
                    self.turns.answer_text(item_id, delta)
                return []
            case rt.SpeechStarted(audio_start_ms, item_id):
                commands = (
                    self._maybe_pause(item_id) if self.interrupts.confirm else self._barge_in()
                )
                self._caller_speaking = True
                self._quiet_since_ms, self._idle_prompts = self.now_ms, 0
                if item_id is not None:
                    self.history.place(item_id, "caller")
                    self._turn(self.turns.caller_started(item_id, audio_start_ms))
                return commands
            case rt.SpeechStopped(audio_end_ms, item_id):
                self._caller_speaking = False
                self._quiet_since_ms = self.now_ms
                commands = []
                if self._pause is not None and item_id in self._pause.items:
                    commands = self._turn_over()
                if item_id in self._noise_items:
                    return commands
                self._answer_due_until_ms = self.now_ms + ANSWER_EXPECTED_MS
                self._drop_heard_speech()
                record = self.turns.caller_stopped(item_id, audio_end_ms)
                if record is not None:
                    self._turn(record)
                return commands
            case rt.InputTranscriptDelta(item_id, delta):
                pause = self._pause
                if pause is None or item_id not in pause.items:
                    return []
                pause.words[item_id] = pause.words.get(item_id, "") + delta
                return self._confirm() if pause.real_words() >= self.interrupts.min_words else []
            case rt.InputTranscriptCompleted(item_id, transcript):
                if item_id in self._noise_items:
                    self._notice("info", f"not an interruption: {transcript!r}")
                    return []
                self._turn(self.turns.caller_said(item_id, transcript))
                return self._transcribed(item_id, transcript)
            case rt.AudioCommitted(item_id):
                return self._committed(item_id)
            case rt.InputTranscriptFailed(item_id, message):
                self._notice("debug", f"no transcript of caller item {item_id}: {message}")
                return self._transcribed(item_id, "")
            case rt.OutputItemAdded(response_id, _, item):
                if item.role == "assistant" and response_id not in self._dropped_responses:
                    assert item.id is not None
                    if response_id in self._protected_responses:
                        self._protected_items.add(item.id)
                    self.history.place(item.id, "assistant")
                    self.turns.answer_started(item.id)
                return []
            case rt.AudioDone(response_id, item_id):
                return self._audio_done(response_id, item_id)
            case rt.TranscriptDone(_, item_id, transcript):
                self._turn(self.turns.answer_said(item_id, transcript))
                return []
            case rt.ResponseCreated(response):
                self._active_response = response.id
                if self._protect_next:
                    self._protect_next = False
                    self._protected_responses.add(response.id)
                self._answer_due_until_ms = 0
                if self._pending is not None and not self._pending.armed:
                    self._pending = replace(self._pending, armed=True)
                return []
            case rt.ResponseDone(response):
                return self._response_done(response)
            case rt.FunctionCallArguments():
                return self._function_call(event)
            case rt.ErrorEvent():
                return self._error(event)
            case rt.ItemTruncated(item_id, audio_end_ms):
                self._notice("debug", f"item {item_id} truncated at {audio_end_ms} ms")
                return []
            case (
                rt.SessionCreated()
                | rt.SessionUpdated()
                | rt.AudioCleared()
                | rt.ItemAdded()
                | rt.ItemDone()
                | rt.ItemDeleted()
                | rt.OutputItemDone()
                | rt.ContentPartAdded()
                | rt.ContentPartDone()
            ):
                return []
            case _:
                assert_never(event)

    def _audio_delta(self, event: rt.AudioDelta) -> list[Command]:
        if event.response_id in self._dropped_responses:
            self.stats.deltas_dropped += 1
            return []
        messages = self.playback.add(event.item_id, event.response_id, event.audio, self.now_ms)
        self.turns.answer_audio(
            event.item_id,
            len(event.audio) // self.audio.bytes_per_ms,
            self.playback.received_ms(event.item_id),
        )
        return [SendToTwilio(message) for message in messages]

    def _audio_done(self, response_id: str, item_id: str) -> list[Command]:
        item = self.playback.item(item_id)
        if item is None or response_id in self._dropped_responses:
            return []
        commands: list[Command] = [SendToTwilio(m) for m in self.playback.flush(self.now_ms)]
        fully_heard = item.fully_heard and not self.playback.paused
        record = self.turns.answer_audio_done(item_id, fully_heard, self.now_ms)
        if record is not None:
            self._turn(record)
        return commands

    def _barge_in(self) -> list[Command]:
        commands = self._cut_answers(truncate=True)
        if self._active_response is not None:
            self._dropped_responses.add(self._active_response)
        return commands

    # ---- pause, then decide ------------------------------------------------------------------

    def _maybe_pause(self, item_id: str | None) -> list[Command]:
        """Speech over an answer (or while one is being made): stop playing, keep the rest,
        and listen until the caller's turn is over."""
        pause = self._pause
        if pause is None:
            if self.playback.idle and self._active_response is None:
                return []  # an ordinary turn
            if self._protected_playing():
                return []  # it plays on; the caller's turn is answered after it
            # The floor from the last second only: the deque may hold 15 s of speech.
            recent = list(self._heard_speech)[-_LEAD_IN_FRAMES:]
            pause = self._pause = Pause(self.now_ms, SoundMeter(recent))
        if item_id is not None:
            pause.items.append(item_id)
        return self._stop_playing(pause)

    def _protected_playing(self) -> bool:
        """Only protected speech is being made or played."""
        active = self._active_response
        if active is not None and active not in self._protected_responses:
            return False
        unheard = self.playback.unheard()
        return (active is not None or bool(unheard)) and unheard <= self._protected_items

    def _stop_playing(self, pause: Pause) -> list[Command]:
        if pause.paused_since is not None:
            return []
        pause.paused_since = self.now_ms
        clear = self.playback.pause(self._active_response, self.now_ms)
        return [] if clear is None else [SendToTwilio(clear)]

    def _hear_during_pause(self, ulaw: bytes) -> list[Command]:
        """A caller frame while listening. A first short sound resumes the answer at once;
        sound again in the same turn ("wait, ... stop") pauses it until the turn is over."""
        pause = self._pause
        assert pause is not None
        commands: list[Command] = []
        now = self.now_ms
        if pause.meter.sound(ulaw):
            pause.sound_ms += 20
            pause.sound_until_ms = now
            commands += self._stop_playing(pause)
        if pause.sound_ms >= self.interrupts.min_ms:
            return commands + self._confirm()
        quiet_ms = now - pause.sound_until_ms
        if pause.paused_since is not None and not pause.resumed and quiet_ms >= SOUND_ENDS_AFTER_MS:
            pause.resumed = True
            return commands + self._play_on(pause)
        if pause.decide_by_ms is not None:  # the turn is over: its words decide, or time does
            if now >= pause.decide_by_ms:
                return commands + self._not_an_interruption()
        elif pause.paused_since is None and quiet_ms >= LISTEN_AFTER_SOUND_MS:
            return commands + self._not_an_interruption()
        return commands

    def _play_on(self, pause: Pause) -> list[Command]:
        if pause.paused_since is None:
            return []
        pause.paused_ms += self.now_ms - pause.paused_since
        pause.paused_since = None
        return [SendToTwilio(m) for m in self.playback.resume(self.now_ms)]

    def _turn_over(self) -> list[Command]:
        """The server ended the caller's turn: decide now, or once its words are known (the
        answer plays on meanwhile)."""
        pause = self._pause
        assert pause is not None
        if pause.sound_ms >= self.interrupts.min_ms:
            return self._confirm()
        if self.interrupts.transcripts and pause.transcripts_pending():
            if pause.decide_by_ms is None:
                pause.decide_by_ms = self.now_ms + TRANSCRIPT_WAIT_MS
            return self._play_on(pause)
        return self._not_an_interruption()

    def _transcribed(self, item_id: str, transcript: str) -> list[Command]:
        """A caller item's final transcript: enough real words interrupt; a turn that is over
        and has all its words is not an interruption otherwise."""
        pause = self._pause
        if pause is None or item_id not in pause.items:
            return []
        pause.words[item_id] = transcript
        pause.transcribed.add(item_id)
        if pause.real_words() >= self.interrupts.min_words:
            return self._confirm()
        if pause.decide_by_ms is not None and not pause.transcripts_pending():
            return self._not_an_interruption()
        return []

    def _confirm(self) -> list[Command]:
        pause = self._pause
        assert pause is not None
        self._pause = None
        stopped = pause.paused_since is not None or pause.paused_ms > 0
        decided_after = self.now_ms - pause.started_ms
        commands = self._cut_answers(truncate=True, decided_after_ms=decided_after, cleared=stopped)
        if self._active_response is not None:
            self._dropped_responses.add(self._active_response)
            commands.append(SendToRealtime(rt.CancelResponse()))
        if pause.committed:  # the turn was over before its words decided: answer it now
            commands += self._answer_turn()
        return commands

    def _not_an_interruption(self) -> list[Command]:
        pause = self._pause
        assert pause is not None
        commands = self._play_on(pause)
        self._pause = None
        self._noise_items.update(pause.items)
        commands += [SendToRealtime(rt.DeleteItem(item)) for item in pause.committed]
        self._reports.append(
            FalseInterruption(
                pause.items[-1] if pause.items else None,
                pause.sound_ms,
                pause.paused_ms,
                self.now_ms,
            )
        )
        self.stats.false_interruptions += 1
        return commands

    def _committed(self, item_id: str) -> list[Command]:
        """The server made a caller item of the audio. With pause-then-decide the bridge
        answers real turns itself, and deletes what was only a sound."""
        if not self.interrupts.confirm:
            return []
        commands: list[Command] = []
        pause = self._pause
        if pause is not None and item_id in pause.items:
            commands += self._turn_over()
            if self._pause is pause:  # still undecided: the decision deletes or answers it
                pause.committed.append(item_id)
                return commands
        if item_id in self._noise_items:
            return [*commands, SendToRealtime(rt.DeleteItem(item_id))]
        return commands + self._answer_turn()

    def _answer_turn(self) -> list[Command]:
        if self.phase is Phase.CONVERSING and self._pending is None:
            return self._respond()
        return []

    def _cut_answers(
        self, truncate: bool, decided_after_ms: int = 0, cleared: bool = False
    ) -> list[Command]:
        """Clear Twilio's queue and cut every answer at what the caller heard; with
        `truncate`, the model's items are cut too (the caller interrupted)."""
        clear, cuts = self.playback.interrupt(self._active_response, self.now_ms)
        cleared = cleared or clear is not None
        commands: list[Command] = [] if clear is None else [SendToTwilio(clear)]
        for cut in cuts:
            item_id = cut.item.item_id
            if truncate:
                commands.append(SendToRealtime(rt.TruncateItem(item_id, cut.audio_end_ms)))
                self._reports.append(
                    Interrupted(
                        item_id,
                        cut.audio_end_ms,
                        cut.received_ms,
                        cleared,
                        self.now_ms,
                        decided_after_ms,
                    )
                )
            self._dropped_responses.add(cut.item.response_id)
            record = self.turns.answer_cut(item_id, cut.audio_end_ms, cut.received_ms, self.now_ms)
            if record is not None:
                self._turn(record)
        if cuts and truncate:
            self.stats.interruptions += 1
        return commands

    def _turn(self, record: TurnRecord) -> None:
        """A turn's newest state, for the call log and for the conversation's history."""
        self._reports.append(record)
        text = record.heard_text if record.interrupted else record.text
        if text is not None and record.speaker != "agent":  # no agent on a bot's call
            self.history.said(record.item_id, record.speaker, text)

    def _drop_heard_speech(self) -> None:
        heard = self._heard_speech
        while len(heard) > _LEAD_IN_FRAMES:
            heard.popleft()

    def _caller_idle(self) -> list[Command]:
        self._quiet_since_ms = self.now_ms
        self._idle_prompts += 1
        goodbye = self._idle_prompts > self.idle.prompts
        self._reports.append(IdlePrompted(self._idle_prompts, goodbye, self.now_ms))
        if goodbye:
            return self._say_and_hang_up(self.idle.goodbye, "the caller stayed silent")
        return self._respond(say_request(self.idle.prompt))

    def _say_and_hang_up(self, words: str, reason: str) -> list[Command]:
        self._pending = PendingAction(HangUp(reason), self.now_ms + ACTION_DEADLINE_MS, False)
        self.phase = Phase.WINDING_DOWN
        return self._respond(say_request(words))

    def _response_done(self, response: rt.ResponseInfo) -> list[Command]:
        self._quiet_since_ms = self.now_ms
        if self._active_response == response.id:
            self._active_response = None
        self._dropped_responses.discard(response.id)
        usage = response.usage or {}
        total = usage.get("total_tokens")
        if isinstance(total, int):
            self.stats.usage_total_tokens += total
        self.playback.forget_response(response.id)
        self._reports.append(
            ResponseFinished(response.id, response.status, response.reason, response.usage)
        )
        commands: list[Command] = []
        if self._response_wanted and (self._pending is None or not self._pending.armed):
            self._response_wanted = False
            instructions, self._wanted_instructions = self._wanted_instructions, None
            commands.append(SendToRealtime(rt.CreateResponse(instructions)))
        return commands + self._act_when_drained()

    def _function_call(self, event: rt.FunctionCallArguments) -> list[Command]:
        self.history.tool_called(event.call_id, event.name, event.arguments)
        if event.name not in BUILTIN_TOOLS:
            self._tools_running.add(event.call_id)
            return [RunTool(event.call_id, event.name, event.arguments, self.now_ms)]
        self.history.tool_answered(event.call_id, TOOL_DONE_NOTE)
        self._pending = PendingAction.from_tool(event.name, event.arguments, self.now_ms)
        self.phase = Phase.WINDING_DOWN
        self._reports.append(ToolRecord(event.name, event.arguments, TOOL_DONE_NOTE, self.now_ms))
        reply = SendToRealtime(rt.CreateItem(_function_output(event.call_id, TOOL_DONE_NOTE)))
        return [reply, *self._act_when_drained()]

    def _error(self, event: rt.ErrorEvent) -> list[Command]:
        if event.code in _QUIET_ERROR_CODES:
            self._notice("debug", f"realtime: {event.code}")
            return []
        if event.code in FATAL_ERROR_CODES:
            self.phase = Phase.ENDED
            return [EndCall("realtime", f"realtime error {event.code}: {event.message}")]
        if event.code in RENEW_ERROR_CODES:
            return [ReplaceRealtime(f"realtime error {event.code}: {event.message}")]
        self._notice("warning", f"realtime error {event.code}: {event.message}")
        return []

    # ---- responses and actions -------------------------------------------------------------

    def _greet(self) -> list[Command]:
        if not self.greeting:
            return []
        if self.interrupts.confirm and self.interrupts.protect_greeting:
            self._protect_next = True
        return self._respond(greeting_request(self.greeting))

    def _respond(self, instructions: str | None = None) -> list[Command]:
        """`response.create` now, or once the active response is done (or the session is
        back)."""
        if self._active_response is not None or not self.linked:
            self._response_wanted = True
            if instructions is not None:  # words asked for win over a plain follow-up
                self._wanted_instructions = instructions
            return []
        return [SendToRealtime(rt.CreateResponse(instructions))]

    def _act_when_drained(self) -> list[Command]:
        pending = self._pending
        if pending is None:
            return []
        drained = self.playback.idle and self._active_response is None
        if not pending.due(drained, self.now_ms):
            return []
        self._pending = None
        self.phase = Phase.ENDED if isinstance(pending.action, HangUp) else Phase.CONVERSING
        return [pending.action]


def _function_output(call_id: str, output: str) -> rt.Item:
    return rt.Item(None, "function_call_output", call_id=call_id, output=output)


def _user_text(text: str) -> rt.Item:
    return rt.Item(None, "message", role="user", text=text)
