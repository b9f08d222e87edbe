"""A scriptable Realtime server on loopback, speaking the GA or the beta dialect.

It records what each connection sent (headers, events, input audio), runs a small energy
VAD on the input like the hosted server's `server_vad`, and answers `response.create` with
a scripted audio answer, streamed faster than real time as the hosted API does. When the
caller speaks during an answer it sends `speech_started`, a few late deltas (the server
races the cancellation), then `response.done` with status `cancelled`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from bot.core.codec import rms, ulaw_to_pcm16

_ids = itertools.count(1)
_quiet = logging.getLogger("tests.fake_realtime")
_quiet.setLevel(logging.WARNING)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):04d}"


@dataclass
class FakeConnection:
    path: str
    headers: dict[str, str]
    events: list[dict[str, object]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.monotonic() of each event
    input_audio: bytearray = field(default_factory=bytearray)
    audio_format: str = "pcm16"  # from session.update: pcm16 | g711_ulaw
    # From session.update's turn_detection: the server answers and cancels by itself.
    create_response: bool = True
    interrupt_response: bool = True
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    speech_started_at: float | None = None
    late_deltas_sent: int = 0
    appended_at: list[float] = field(default_factory=list)  # when each 20 ms frame came
    sent: list[str] = field(default_factory=list)  # the types of the events sent, in order
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each
    socket: ServerConnection | None = None
    transcription: bool = False  # a transcription session (`intent=transcription`)
    manual_commit: bool = False  # its turn detection is off: the client commits

    def of_type(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def truncates(self) -> list[dict[str, object]]:
        return self.of_type("conversation.item.truncate")

    @property
    def frames_in(self) -> int:
        """The caller's audio received, in 20 ms Twilio frames (an append may hold several)."""
        return len(self.input_audio) // (160 if self.audio_format == "g711_ulaw" else 960)

    def input_pcm16(self) -> bytes:
        """Input audio as PCM16 at the session's rate (24 kHz, or 8 kHz for μ-law)."""
        if self.audio_format == "g711_ulaw":
            return ulaw_to_pcm16(bytes(self.input_audio))
        return bytes(self.input_audio)


class FakeRealtime:
    def __init__(
        self,
        *,
        dialect: str = "ga",
        answer: bytes = b"",
        delta_ms: int = 100,
        speed: float = 20.0,
        vad_threshold_rms: float = 1500.0,
        reject_status: int | None = None,
        close_after_s: float | None = None,
        close_code: int = 1011,
        error_before_close: dict[str, object] | None = None,
        late_deltas: int = 3,
        answer_text: str = "Hello there.",
        caller_texts: tuple[str, ...] = (),
        transcript_delay_s: float = 0.0,
        texts_by_pitch: dict[int, str] | None = None,
        auto_respond: bool = False,
        usage: dict[str, int] | None = None,
        script: list[Scripted] | None = None,
    ) -> None:
        self.dialect = dialect
        self.answer = answer  # in the session's output format; PCM16 24 kHz by default
        self.delta_ms = delta_ms
        self.speed = speed  # how much faster than real time the answer streams
        self.vad_threshold_rms = vad_threshold_rms
        self.reject_status = reject_status
        self.close_after_s = close_after_s
        self.close_code = close_code
        self.error_before_close = error_before_close
        self.late_deltas = late_deltas
        self.answer_text = answer_text
        self.caller_texts = caller_texts  # transcripts of the caller's turns, in order
        # Or, per turn, the text of the pitch nearest to the turn's loudest frequency (Hz):
        # with two tracks in two sessions, each speaker has their own words.
        self.texts_by_pitch = texts_by_pitch or {}
        self.transcript_delay_s = transcript_delay_s  # from the commit to the first word
        self.auto_respond = auto_respond  # answer when the caller stops speaking
        self.usage = usage or {"total_tokens": 57, "input_tokens": 20, "output_tokens": 37}
        self.script = list(script or [])  # one entry per response, then the default answer
        self.connections: list[FakeConnection] = []
        self.handshakes = 0
        self._server: websockets.asyncio.server.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    async def __aenter__(self) -> FakeRealtime:
        self._server = await websockets.serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            logger=_quiet,  # it would log the bridge's Authorization header at DEBUG
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self.reject_status is not None:
            status = HTTPStatus(self.reject_status)
            return connection.respond(status, f"{status.phrase}\n")
        return None

    # -- per connection ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        conn = FakeConnection(request.path, {k.lower(): v for k, v in request.headers.raw_items()})
        conn.socket = ws
        self.connections.append(conn)
        state = _State()
        tasks: set[asyncio.Task[None]] = set()
        if self.close_after_s is not None:
            tasks.add(asyncio.create_task(self._close_later(ws)))
        await self._send(ws, {"type": "session.created", "session": self._session_object(conn)})
        try:
            async for raw in ws:
                event = json.loads(raw)
                kind = event.get("type")
                if kind != "input_audio_buffer.append":
                    conn.events.append(event)
                    conn.received_at.append(time.monotonic())
                if kind == "session.update":
                    self._apply_session(conn, event["session"])
                    await self._send(ws, {"type": "session.updated", "session": event["session"]})
                elif kind == "transcription_session.update":  # beta transcription sessions
                    conn.transcription = True
                    self._apply_session(conn, event["session"])
                    updated = {"type": "transcription_session.updated", "session": event["session"]}
                    await self._send(ws, updated)
                elif kind == "input_audio_buffer.commit":
                    await self._commit(ws, conn, state)
                elif kind == "input_audio_buffer.append":
                    conn.events.append({"type": kind, "bytes": len(event["audio"])})
                    conn.received_at.append(time.monotonic())
                    audio = base64.b64decode(event["audio"])
                    frame_bytes = 160 if conn.audio_format == "g711_ulaw" else 960
                    conn.appended_at += [time.monotonic()] * max(1, len(audio) // frame_bytes)
                    await self._on_audio(ws, conn, state, audio)
                elif kind == "response.create":
                    task = asyncio.create_task(self._respond(ws, conn, state))
                    tasks.add(task)
                elif kind == "response.cancel":
                    state.interrupted.set()
                elif kind == "conversation.item.delete":
                    await self._send(
                        ws, {"type": "conversation.item.deleted", "item_id": event["item_id"]}
                    )
                elif kind == "conversation.item.truncate":
                    await self._send(
                        ws,
                        {
                            "type": "conversation.item.truncated",
                            "item_id": event["item_id"],
                            "content_index": 0,
                            "audio_end_ms": event["audio_end_ms"],
                        },
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            conn.closed_at = time.monotonic()
            for task in tasks | state.tasks:
                task.cancel()

    def _session_object(self, conn: FakeConnection) -> dict[str, object]:
        if self.dialect == "ga":
            return {
                "type": "realtime",
                "object": "realtime.session",
                "id": _id("sess"),
                "expires_at": int(time.time()) + 3600,
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
            }
        return {"id": _id("sess"), "object": "realtime.session", "input_audio_format": "pcm16"}

    def _apply_session(self, conn: FakeConnection, session: dict[str, object]) -> None:
        if set(session) <= {"type", "instructions"}:
            return  # an update of the instructions alone
        if session.get("type") == "transcription":
            conn.transcription = True
        if self.dialect == "ga":
            audio = session.get("audio")
            assert isinstance(audio, dict), "GA session.update must nest audio settings"
            if "format" in audio.get("input", {}):
                fmt = audio["input"]["format"]["type"]
                conn.audio_format = "g711_ulaw" if fmt == "audio/pcmu" else "pcm16"
            vad = audio.get("input", {}).get("turn_detection")
        else:
            if "input_audio_format" in session:
                conn.audio_format = str(session["input_audio_format"])
            vad = session.get("turn_detection")
        if isinstance(vad, dict):
            conn.create_response = bool(vad.get("create_response", True))
            conn.interrupt_response = bool(vad.get("interrupt_response", True))
        elif vad is None and conn.transcription:
            conn.manual_commit = True  # turn detection off: the client commits
        if conn.transcription:
            conn.create_response = conn.interrupt_response = False

    async def _close_later(self, ws: ServerConnection) -> None:
        assert self.close_after_s is not None
        await asyncio.sleep(self.close_after_s)
        if self.error_before_close is not None:
            await self._send(ws, {"type": "error", "error": self.error_before_close})
        await ws.close(self.close_code, "fake server closing")

    def _name(self, ga: str, beta: str) -> str:
        return ga if self.dialect == "ga" else beta

    async def _send(self, ws: ServerConnection, event: dict[str, object]) -> None:
        event.setdefault("event_id", _id("event"))
        for conn in self.connections:
            if conn.socket is ws:
                conn.sent.append(str(event["type"]))
                conn.sent_at.append(time.monotonic())
        await ws.send(json.dumps(event))

    async def _transcribe(self, ws: ServerConnection, item_id: str | None, text: str) -> None:
        """The caller's words as gpt-4o-transcribe sends them: deltas, then the whole."""
        await asyncio.sleep(self.transcript_delay_s)
        words = text.split(" ")
        for index, word in enumerate(words):
            await self._send(
                ws,
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": word if index == 0 else " " + word,
                },
            )
        await self._send(
            ws,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
            },
        )

    async def _on_audio(
        self, ws: ServerConnection, conn: FakeConnection, state: _State, audio: bytes
    ) -> None:
        conn.input_audio += audio
        pcm = ulaw_to_pcm16(audio) if conn.audio_format == "g711_ulaw" else audio
        rate = 8000 if conn.audio_format == "g711_ulaw" else 24000
        position_ms = len(conn.input_audio) * 1000 // (rate * (1 if rate == 8000 else 2))
        state.turn_audio += pcm
        if conn.manual_commit:
            return  # no turn detection: the client commits
        loud = rms(pcm) > self.vad_threshold_rms if pcm else False
        # Runs in ms of audio, whatever the appends' size.
        ms = len(audio) * 1000 // (rate * (1 if rate == 8000 else 2))
        state.loud_ms = state.loud_ms + ms if loud else 0
        state.quiet_ms = 0 if loud else state.quiet_ms + ms
        if state.speaking and state.quiet_ms >= 300:  # 300 ms of silence ends the turn
            state.speaking = False
            await self._send(
                ws,
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": max(0, position_ms - 300),
                    "item_id": state.user_item,
                },
            )
            await self._commit(ws, conn, state)
        if not state.speaking and not loud:
            del state.turn_audio[: max(0, len(state.turn_audio) - rate // 2)]  # the padding
        if not state.speaking and state.loud_ms >= 40:
            state.speaking = True
            conn.speech_started_at = time.monotonic()
            if state.responding and conn.interrupt_response:
                state.interrupted.set()
            state.user_item = _id("item")
            await self._send(
                ws,
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": max(0, position_ms - 40),
                    "item_id": state.user_item,
                },
            )

    async def _commit(self, ws: ServerConnection, conn: FakeConnection, state: _State) -> None:
        """The turn so far becomes an item, and its transcript follows."""
        item_id = state.user_item if not conn.manual_commit else _id("item")
        state.user_item = None
        await self._send(
            ws,
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None},
        )
        rate = 8000 if conn.audio_format == "g711_ulaw" else 24000
        text = self._text_for(bytes(state.turn_audio), rate, state.turns)
        state.turn_audio.clear()
        state.turns += 1
        if self.transcript_delay_s:
            state.tasks.add(asyncio.create_task(self._transcribe(ws, item_id, text)))
        else:
            await self._transcribe(ws, item_id, text)
        if self.auto_respond and conn.create_response and not state.responding:
            state.tasks.add(asyncio.create_task(self._respond(ws, conn, state)))

    def _text_for(self, pcm: bytes, rate: int, turn: int) -> str:
        if self.texts_by_pitch and len(pcm) >= 400:
            samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64)
            spectrum = np.abs(np.fft.rfft(samples))
            pitch = float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])
            nearest = min(self.texts_by_pitch, key=lambda hz: abs(hz - pitch))
            return self.texts_by_pitch[nearest]
        if self.caller_texts:
            return self.caller_texts[turn % len(self.caller_texts)]
        return f"caller turn {turn + 1}"

    async def _respond(self, ws: ServerConnection, conn: FakeConnection, state: _State) -> None:
        scripted = self.script.pop(0) if self.script else Scripted(self.answer, self.answer_text)
        response_id, item_id = _id("resp"), _id("item")
        state.responding = True
        state.interrupted.clear()
        await self._send(
            ws,
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}},
        )
        await self._send(
            ws,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": {"id": item_id, "type": "message", "role": "assistant", "content": []},
            },
        )
        bytes_per_ms = 8 if conn.audio_format == "g711_ulaw" else 48
        step = self.delta_ms * bytes_per_ms
        delta_name = self._name("response.output_audio.delta", "response.audio.delta")

        async def delta(audio: bytes) -> None:
            await self._send(
                ws,
                {
                    "type": delta_name,
                    "response_id": response_id,
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(audio).decode(),
                },
            )

        transcript_delta_name = self._name(
            "response.output_audio_transcript.delta", "response.audio_transcript.delta"
        )
        starts = range(0, len(scripted.audio), step)
        words = scripted.text.split(" ") if scripted.text and starts else []
        # As the hosted API does, each word's transcript comes just before its audio.
        words_before: dict[int, list[str]] = {index: [] for index in range(len(starts))}
        for number, word in enumerate(words):
            text = word if number == 0 else " " + word
            words_before[number * len(starts) // max(1, len(words))].append(text)
        streaming_from = time.monotonic()
        for index, start in enumerate(starts):
            if state.interrupted.is_set():
                break
            for text in words_before[index]:
                await self._send(
                    ws,
                    {
                        "type": transcript_delta_name,
                        "response_id": response_id,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": text,
                    },
                )
            await delta(scripted.audio[start : start + step])
            # Faster than real time, like the hosted API, but not all at once.
            await asyncio.sleep(self.delta_ms / 1000 / self.speed)
        if scripted.tool is not None:
            name, arguments = scripted.tool
            await self._send(
                ws,
                {
                    "type": "response.function_call_arguments.done",
                    "response_id": response_id,
                    "item_id": _id("fc"),
                    "output_index": 1,
                    "call_id": _id("call"),
                    "name": name,
                    "arguments": arguments,
                },
            )
        # Stay "in progress" while the caller could still be hearing the answer, so that
        # speaking over it interrupts an active response.
        playback_s = len(scripted.audio) / bytes_per_ms / 1000
        playback_s -= time.monotonic() - streaming_from  # streamed in real time: less left
        try:
            await asyncio.wait_for(state.interrupted.wait(), max(0.0, playback_s))
        except TimeoutError:
            pass
        if state.interrupted.is_set():
            # The server races its own cancellation: some deltas still arrive.
            for _ in range(self.late_deltas):
                await delta(scripted.audio[:step] or b"\0\0")
                conn.late_deltas_sent += 1
        done_name = self._name("response.output_audio.done", "response.audio.done")
        await self._send(ws, {"type": done_name, "response_id": response_id, "item_id": item_id})
        transcript_name = self._name(
            "response.output_audio_transcript.done", "response.audio_transcript.done"
        )
        await self._send(
            ws,
            {
                "type": transcript_name,
                "response_id": response_id,
                "item_id": item_id,
                "transcript": scripted.text,
            },
        )
        cancelled = state.interrupted.is_set()
        status = "cancelled" if cancelled else "completed"
        details = {"type": "cancelled", "reason": "turn_detected"} if cancelled else None
        await self._send(
            ws,
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "status": status,
                    "status_details": details,
                    "usage": self.usage,
                },
            },
        )
        state.responding = False


@dataclass
class Scripted:
    """One response: audio in the session's format, its transcript, maybe a function call."""

    audio: bytes = b""
    text: str = ""
    tool: tuple[str, str] | None = None  # (name, JSON arguments)


@dataclass
class _State:
    speaking: bool = False
    loud_ms: int = 0
    responding: bool = False
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    quiet_ms: int = 0
    turns: int = 0
    user_item: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    turn_audio: bytearray = field(default_factory=bytearray)  # PCM16 of the turn so far


def pcm16_tone(freq_hz: float, seconds: float, dbfs: float = -10.0, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    amplitude = 32767 * 10 ** (dbfs / 20)
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()
