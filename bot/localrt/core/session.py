"""A Realtime-compatible server session, free of I/O: client events in, server events and
provider jobs out. The runner (`bot/localrt/runner.py`) carries out the jobs (speech-to-text,
a chat model, text-to-speech) and feeds their results back.

Theory of operation
-------------------
Appended audio is 24 kHz PCM16 (`audio/pcm`) or 8 kHz μ-law (`audio/pcmu`), kept as PCM16
at its own rate: μ-law is never resampled. With server VAD (`vad.py`), speech ends a turn:
the buffer is committed as a user audio item, a `Transcribe` job runs, and (with
`create_response`) a response starts. Speech during a response cancels it
(`interrupt_response`): `response.done` with status `cancelled`, reason `turn_detected`.

A response asks the chat model (`Generate`) with the conversation so far, once the caller's
last words are transcribed: a text model cannot hear audio. Its text comes back in pieces;
each complete sentence becomes a `Synthesize` job as soon as it is ready, and its speech
comes back as audio deltas after the sentence's transcript delta. Function calls become
`function_call` items. `response.done` follows when the model and every sentence are done.

`conversation.item.truncate` cuts an assistant item's stored text to what was heard before
`audio_end_ms` (`bot.core.heard`, the rule the bridge's call log uses too), so the next
turn never contains words the caller did not hear.

With `semantic_vad`, a short pause in the caller's speech asks for a `ProbeTurn` job: the
turn so far, transcribed. If its words sound finished (`endpointing.py`) the turn ends at
once and they become the item's transcript; otherwise the caller gets the eagerness's
longest wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, assert_never

from bot.core.codec import ulaw_to_pcm16
from bot.core.realtime import events as rt
from bot.localrt.core.conversation import Conversation, Entry
from bot.localrt.core.endpointing import MAX_WAIT_MS, PROBE_AFTER_MS, sounds_finished
from bot.localrt.core.vad import FRAME_MS, SpeechDetector, SpeechEnded, TurnTracker, energy_speech

__all__ = [
    "Cancel",
    "Emit",
    "Generate",
    "Output",
    "ProbeTurn",
    "RealtimeServerSession",
    "Synthesize",
    "Transcribe",
]

_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n+")
_DELTA_MS: Final = 100  # audio per delta event
DEFAULT_CONFIG: Final = rt.SessionConfig(
    instructions="You are a helpful, concise voice assistant.",
    voice="alloy",
    input_format=rt.AudioFormat.PCM16,
    output_format=rt.AudioFormat.PCM16,
    turn_detection=rt.TurnDetection(),
    transcription=rt.Transcription("local"),
    tools=(),
    speak=True,
)


@dataclass(frozen=True, slots=True)
class Emit:
    """A server event to send."""

    event: rt.ServerEvent


@dataclass(frozen=True, slots=True)
class Transcribe:
    item_id: str
    pcm16: bytes
    rate_hz: int
    prompt: str | None


@dataclass(frozen=True, slots=True)
class ProbeTurn:
    """Transcribe the caller's turn so far: do its words sound finished? (`semantic_vad`)"""

    probe_id: int
    pcm16: bytes
    rate_hz: int
    prompt: str | None


@dataclass(frozen=True, slots=True)
class Generate:
    response_id: str
    instructions: str
    messages: list[dict[str, Any]]  # chat-completions style, tool calls included
    tools: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Synthesize:
    response_id: str
    sentence_index: int
    text: str
    voice: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the jobs of this response; their late results are ignored anyway."""

    response_id: str


Output = Emit | Transcribe | ProbeTurn | Generate | Synthesize | Cancel


@dataclass
class _Response:
    id: str
    item: Entry
    pending_text: str = ""  # model text not yet a whole sentence
    sentences: int = 0
    synthesized: int = 0
    generation_done: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    calls: list[Entry] = field(default_factory=list)
    waiting: Generate | None = None  # held until the caller's last words are transcribed
    speaking: bool = False  # the assistant message item is open (the model said something)
    outputs: int = 0  # output items so far


class RealtimeServerSession:
    def __init__(
        self,
        session_id: str,
        model: str,
        speech_detector: SpeechDetector | None = None,
        *,
        transcribe_only: bool = False,
    ) -> None:
        self.session_id = session_id
        self.model = model
        self.config = DEFAULT_CONFIG
        if transcribe_only:  # opened with `?intent=transcription`: it never answers
            self.config = replace(
                DEFAULT_CONFIG,
                transcribe_only=True,
                turn_detection=rt.TurnDetection(create_response=False, interrupt_response=False),
            )
        self.conversation = Conversation()
        self.response: _Response | None = None
        self._seq = 0
        self._input = bytearray()  # PCM16 not yet committed, at the input format's rate
        self._input_ms = 0  # all audio appended this session
        self._frame = bytearray()
        self._turns = TurnTracker(speech_detector or energy_speech)
        self._user_item_id: str | None = None
        self._transcribing: set[str] = set()
        # Semantic end of turn: this pause's probe, and what its words said.
        self._probe_id = 0
        self._probe_state: Literal["none", "asked", "heard"] = "none"
        self._finished: bool | None = None  # None: no words

    # ---- ids and shapes --------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self.session_id[-8:]}{self._seq:06d}"

    def _info(self) -> rt.SessionInfo:
        return rt.SessionInfo(self.session_id, self.config, self.model)

    def _error(self, message: str, code: str, event_id: str | None) -> Emit:
        return Emit(rt.ErrorEvent(code, message, "invalid_request_error", None, event_id))

    def _append_item(self, item: Entry) -> list[Output]:
        previous = self.conversation.add(item)
        view = item.view()
        return [Emit(rt.ItemAdded(view, previous)), Emit(rt.ItemDone(view, previous))]

    @property
    def _input_rate(self) -> int:
        assert self.config.input_format is not None
        return self.config.input_format.rate_hz

    # ---- client events ---------------------------------------------------------------------

    def open(self) -> list[Output]:
        return [Emit(rt.SessionCreated(self._info()))]

    def receive(self, event: rt.ClientEvent) -> list[Output]:
        """One client event. A request that cannot be met answers with an `error` event; the
        session goes on."""
        match event:
            case rt.AppendAudio(audio):
                return self._append(audio, event.event_id)
            case rt.SessionUpdate(update):
                return self._session_update(update)
            case rt.CommitAudio():
                if len(self._input) < 100 * 2 * self._input_rate // 1000:
                    return [
                        self._error(
                            "Expected at least 100ms of audio in the buffer.",
                            "input_audio_buffer_commit_empty",
                            event.event_id,
                        )
                    ]
                return self._commit()
            case rt.ClearAudio():
                self._input.clear()
                self._frame.clear()
                return [Emit(rt.AudioCleared())]
            case rt.CreateItem(item):
                return self._item_create(item)
            case rt.DeleteItem(item_id):
                self.conversation.delete(item_id)
                return [Emit(rt.ItemDeleted(item_id))]
            case rt.TruncateItem(item_id, audio_end_ms):
                return self._truncate(item_id, audio_end_ms, event.event_id)
            case rt.CreateResponse(instructions):
                if self.config.transcribe_only:
                    return [
                        self._error(
                            "A transcription session does not create responses.",
                            "invalid_request_error",
                            event.event_id,
                        )
                    ]
                if self.response is not None:
                    return [
                        self._error(
                            "Conversation already has an active response in progress.",
                            "conversation_already_has_active_response",
                            event.event_id,
                        )
                    ]
                return self._start_response(instructions)
            case rt.CancelResponse():
                if self.response is None:
                    return [
                        self._error(
                            "Cancellation failed: no active response found",
                            "response_cancel_not_active",
                            event.event_id,
                        )
                    ]
                return self._finish_response("cancelled", "client_cancelled")
            case _:
                assert_never(event)

    def _session_update(self, update: rt.SessionConfig) -> list[Output]:
        changes = {
            name: getattr(update, name)
            for name in (
                "instructions",
                "voice",
                "input_format",
                "output_format",
                "turn_detection",
                "transcription",
                "tools",
                "speak",
            )
            if getattr(update, name) is not None
        }
        if update.input_format not in (None, self.config.input_format):
            self._input.clear()  # audio of another rate cannot be joined to it
            self._frame.clear()
        if update.transcribe_only:
            # A transcription session (`intent=transcription`): it transcribes, never answers.
            changes["transcribe_only"] = True
            vad = changes.get("turn_detection", self.config.turn_detection)
            if isinstance(vad, rt.TurnDetection):
                changes["turn_detection"] = replace(
                    vad, create_response=False, interrupt_response=False
                )
            changes.setdefault(
                "transcription", self.config.transcription or rt.Transcription("local")
            )
        self.config = replace(self.config, **changes)
        return [Emit(rt.SessionUpdated(self._info()))]

    def _append(self, audio: bytes, event_id: str | None) -> list[Output]:
        if self.config.input_format is rt.AudioFormat.G711_ULAW:
            audio = ulaw_to_pcm16(audio)
        elif len(audio) % 2:
            message = "Invalid input_audio_buffer.append: pcm16 audio must be whole 16-bit samples"
            return [self._error(message, "invalid_value", event_id)]
        rate = self._input_rate
        frame_bytes = FRAME_MS * 2 * rate // 1000
        outputs: list[Output] = []
        self._frame += audio
        while len(self._frame) >= frame_bytes:
            frame = bytes(self._frame[:frame_bytes])
            del self._frame[:frame_bytes]
            self._input += frame
            self._input_ms += FRAME_MS
            vad = self.config.turn_detection
            if isinstance(vad, rt.TurnDetection):
                outputs += self._vad(frame, rate, vad)
        return outputs

    def _vad(self, frame: bytes, rate: int, vad: rt.TurnDetection) -> list[Output]:
        change = self._turns.frame(frame, rate, self._input_ms, vad, self._silence_ms(vad))
        if change is None:
            if not self._turns.speaking:
                # Keep only the padding the start of speech may reach back to.
                keep = (vad.prefix_padding_ms + 3 * FRAME_MS) * 2 * rate // 1000
                del self._input[: max(0, len(self._input) - keep)]
                return []
            return self._maybe_probe(vad) if vad.semantic else []
        if isinstance(change, SpeechEnded):
            return self._turn_ended(change, vad)
        self._user_item_id = self._id("item")
        self._new_pause()
        outputs: list[Output] = [Emit(rt.SpeechStarted(change.audio_start_ms, self._user_item_id))]
        if self.response is not None and vad.interrupt_response:
            outputs += self._finish_response("cancelled", "turn_detected")
        return outputs

    def _silence_ms(self, vad: rt.TurnDetection) -> int:
        """How much silence ends the turn: with `semantic_vad`, the longest wait until the
        words say otherwise; a sound without words gets the fixed `server_vad` wait."""
        if not vad.semantic or (self._probe_state == "heard" and self._finished is None):
            return vad.silence_duration_ms
        return MAX_WAIT_MS[vad.eagerness]

    def _new_pause(self) -> None:
        self._probe_id += 1
        self._probe_state, self._finished = "none", None

    def _maybe_probe(self, vad: rt.TurnDetection) -> list[Output]:
        quiet = self._turns.quiet_ms
        if quiet == 0:  # speech again: the next pause gets its own probe
            if self._probe_state != "none":
                self._new_pause()
            return []
        if quiet < PROBE_AFTER_MS or self._probe_state != "none":
            return []
        self._probe_state = "asked"
        transcription = self.config.transcription
        prompt = transcription.prompt if isinstance(transcription, rt.Transcription) else None
        return [ProbeTurn(self._probe_id, bytes(self._input), self._input_rate, prompt)]

    def turn_probed(self, probe_id: int, text: str | None) -> list[Output]:
        """The words of a probed pause (None: the probe failed). Finished words end the turn
        now, as its transcript; a probe of an earlier pause is ignored."""
        vad = self.config.turn_detection
        if probe_id != self._probe_id or self._probe_state != "asked" or not self._turns.speaking:
            return []
        if not isinstance(vad, rt.TurnDetection):
            return []
        self._probe_state = "heard"
        self._finished = None if text is None else sounds_finished(text)
        if self._finished and text is not None:
            return self._turn_ended(self._turns.end(self._input_ms), vad, text)
        return []

    def _turn_ended(
        self, change: SpeechEnded, vad: rt.TurnDetection, transcript: str | None = None
    ) -> list[Output]:
        item_id = self._user_item_id or self._id("item")
        self._user_item_id = None
        self._new_pause()
        outputs: list[Output] = [Emit(rt.SpeechStopped(change.audio_end_ms, item_id))]
        outputs += self._commit(item_id, transcript)
        if vad.create_response and self.response is None:
            outputs += self._start_response()
        return outputs

    def _commit(self, item_id: str | None = None, transcript: str | None = None) -> list[Output]:
        item = Entry(item_id or self._id("item"), "message", role="user", audio=True)
        previous = self.conversation.items[-1].id if self.conversation.items else None
        audio = bytes(self._input)
        self._input.clear()
        outputs: list[Output] = [Emit(rt.AudioCommitted(item.id, previous))]
        outputs += self._append_item(item)
        transcription = self.config.transcription
        if isinstance(transcription, rt.Transcription):
            self._transcribing.add(item.id)
            if transcript is not None:  # the probe that ended the turn heard it already
                return [*outputs, *self.transcribed(item.id, transcript)]
            outputs.append(Transcribe(item.id, audio, self._input_rate, transcription.prompt))
        return outputs

    def _item_create(self, raw: rt.Item) -> list[Output]:
        item = Entry(
            raw.id or self._id("item"),
            raw.type,
            role=raw.role if raw.type == "message" else None,
            text=raw.text,
            call_id=raw.call_id,
            name=raw.name,
            arguments=raw.arguments,
            output=raw.output,
        )
        return self._append_item(item)

    def _truncate(self, item_id: str, audio_end_ms: int, event_id: str | None) -> list[Output]:
        problem = self.conversation.truncate(item_id, audio_end_ms)
        if problem is not None:
            code = "item_not_found" if self.conversation.find(item_id) is None else "invalid_value"
            return [self._error(problem, code, event_id)]
        return [Emit(rt.ItemTruncated(item_id, audio_end_ms))]

    # ---- responses -------------------------------------------------------------------------

    def _response_info(
        self, response: _Response, status: str, reason: str | None = None
    ) -> rt.ResponseInfo:
        item_status: Literal["completed", "incomplete"] = (
            "completed" if status == "completed" else "incomplete"
        )
        output = tuple(
            item.view(item_status)
            for item in [response.item, *response.calls]
            if item.text or item.type == "function_call"
        )
        return rt.ResponseInfo(
            response.id,
            status,
            reason,
            response.usage or None,
            output,
            conversation_id="conv_" + self.session_id,
        )

    def _start_response(self, instructions: str | None = None) -> list[Output]:
        item = Entry(self._id("item"), "message", role="assistant", audio=True)
        response = _Response(self._id("resp"), item)
        self.response = response
        outputs: list[Output] = [
            Emit(rt.ResponseCreated(self._response_info(response, "in_progress")))
        ]
        # A cascade hears only text: the model waits for the caller's words.
        assert self.config.instructions is not None
        tools = [dict(tool) for tool in self.config.tools or ()]
        response.waiting = Generate(
            response.id, instructions or self.config.instructions, [], tools
        )
        return outputs + self._release()

    def _open_message(self, response: _Response) -> list[Output]:
        """The assistant message item, opened when the model first says something."""
        if response.speaking:
            return []
        response.speaking = True
        response.outputs += 1
        item = response.item
        self.conversation.add(item)  # its text grows as sentences are spoken
        return [
            Emit(rt.OutputItemAdded(response.id, 0, item.view("in_progress"))),
            Emit(rt.ContentPartAdded(response.id, item.id, "")),
        ]

    def _release(self) -> list[Output]:
        response = self.response
        if response is None or response.waiting is None or self._transcribing:
            return []
        job, response.waiting = response.waiting, None
        # The new assistant item is empty and so left out: only earlier turns are sent.
        history = self.conversation.messages()
        return [Generate(job.response_id, job.instructions, history, job.tools)]

    # ---- results of jobs -------------------------------------------------------------------

    def transcribed(self, item_id: str, text: str) -> list[Output]:
        self._transcribing.discard(item_id)
        item = self.conversation.find(item_id)
        if item is None:
            return self._release()
        item.text = text.strip()
        return [Emit(rt.InputTranscriptCompleted(item_id, item.text)), *self._release()]

    def transcription_failed(self, item_id: str, message: str) -> list[Output]:
        """The caller's words stay unknown; a waiting response goes ahead without them."""
        self._transcribing.discard(item_id)
        failed = rt.InputTranscriptFailed(item_id, message, "transcription_failed")
        return [Emit(failed), *self._release()]

    def generated_text(self, response_id: str, delta: str) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        response.pending_text += delta
        pieces = _SENTENCE_END.split(response.pending_text)
        response.pending_text = pieces.pop()
        return [self._sentence(response, s) for s in pieces if s.strip()]

    def _sentence(self, response: _Response, text: str) -> Synthesize:
        response.sentences += 1
        assert self.config.voice is not None
        return Synthesize(response.id, response.sentences - 1, text.strip(), self.config.voice)

    def function_call(
        self, response_id: str, call_id: str, name: str, arguments: str
    ) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        item = Entry(
            self._id("item"), "function_call", call_id=call_id, name=name, arguments=arguments
        )
        response.calls.append(item)
        index = response.outputs
        response.outputs += 1
        self.conversation.add(item)
        return [
            Emit(rt.OutputItemAdded(response.id, index, item.view("in_progress"))),
            Emit(rt.FunctionCallArguments(response.id, item.id, call_id, name, arguments, index)),
            Emit(rt.OutputItemDone(response.id, index, item.view())),
        ]

    def generation_done(self, response_id: str, usage: dict[str, int]) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        response.generation_done = True
        response.usage = {
            "total_tokens": usage.get("total_tokens", 0),
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
        }
        outputs: list[Output] = []
        if response.pending_text.strip():
            outputs.append(self._sentence(response, response.pending_text))
            response.pending_text = ""
        return outputs + self._maybe_done(response)

    def synthesized(
        self, response_id: str, sentence_index: int, text: str, audio: bytes
    ) -> list[Output]:
        """Speech for one sentence, in the session's output format, delivered in order."""
        response = self._current(response_id)
        if response is None:
            return []
        assert self.config.output_format is not None
        bytes_per_ms = self.config.output_format.bytes_per_ms
        opened = self._open_message(response)
        item = response.item
        item.spoken.append((text, len(audio) // bytes_per_ms))
        item.text = (item.text + " " + text).strip()
        response.synthesized += 1
        transcript = Emit(rt.TranscriptDelta(response.id, item.id, text + " "))
        outputs: list[Output] = [*opened, transcript]
        step = _DELTA_MS * bytes_per_ms
        for start in range(0, len(audio), step):
            delta = rt.AudioDelta(response.id, item.id, audio[start : start + step])
            outputs.append(Emit(delta))
        return outputs + self._maybe_done(response)

    def generation_failed(self, response_id: str, message: str) -> list[Output]:
        """The chat model failed: an `error` event, then the response ends as failed."""
        response = self._current(response_id)
        if response is None:
            return []
        failure = rt.ErrorEvent("generation_failed", message, "server_error")
        return [Emit(failure), *self._finish_response("failed", None)]

    def _maybe_done(self, response: _Response) -> list[Output]:
        if response.generation_done and response.synthesized == response.sentences:
            return self._finish_response("completed", None)
        return []

    def _current(self, response_id: str) -> _Response | None:
        response = self.response
        return response if response is not None and response.id == response_id else None

    def _finish_response(self, status: str, reason: str | None) -> list[Output]:
        response = self.response
        assert response is not None
        self.response = None
        outputs: list[Output] = [Cancel(response.id)] if status != "completed" else []
        if response.speaking:
            outputs += self._close_message(response, status)
        outputs.append(Emit(rt.ResponseDone(self._response_info(response, status, reason))))
        return outputs

    def _close_message(self, response: _Response, status: str) -> list[Output]:
        item = response.item
        final: Literal["completed", "incomplete"] = (
            "completed" if status == "completed" else "incomplete"
        )
        return [
            Emit(rt.AudioDone(response.id, item.id)),
            Emit(rt.TranscriptDone(response.id, item.id, item.text)),
            Emit(rt.ContentPartDone(response.id, item.id, item.text)),
            Emit(rt.OutputItemDone(response.id, 0, item.view(final))),
        ]
