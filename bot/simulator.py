"""`bot simulate`: a phone that plays Twilio's side of a call against any bridge URL.

It fetches TwiML from the voice webhook (signed when it knows the auth token), opens the
`<Stream>` it names, sends `connected` and `start` with the TwiML's `<Parameter>`s, streams
a WAV file as 20 ms μ-law frames and plays what comes back like Twilio does: in order, at
real-time pace, acknowledging each mark only once the audio before it has played, and
dropping its buffer on `clear` (sending back the marks that will now never play).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import wave
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import aiohttp
import websockets
import yarl
from twilio.request_validator import RequestValidator

from bot.core import twilio
from bot.core.codec import (
    TWILIO_RATE_HZ,
    ULAW_SILENCE,
    pcm16_to_ulaw,
    resample,
    to_pcm16_mono,
    ulaw_to_pcm16,
)
from bot.errors import TwilioProtocolError

__all__ = ["ClearEvent", "SimulationResult", "load_wav_as_ulaw", "simulate", "write_wav"]

FRAME_MS: Final = 20
FRAME_BYTES: Final = 160
SILENCE: Final = bytes([ULAW_SILENCE]) * FRAME_BYTES


def load_wav_as_ulaw(path: Path) -> bytes:
    """Any PCM WAV (rate, width, mono or stereo) → 8 kHz mono μ-law.

    Raises:
        ValueError: more than two channels.
    """
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    try:
        pcm = to_pcm16_mono(frames, width, channels)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return pcm16_to_ulaw(resample(pcm, rate, TWILIO_RATE_HZ))


def write_wav(path: Path, ulaw: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TWILIO_RATE_HZ)
        wav.writeframes(ulaw_to_pcm16(ulaw))


@dataclass
class ClearEvent:
    at_s: float  # since the stream started
    played_ms: float  # audio played since the previous clear, the in-flight frame pro rata
    flushed_bytes: int  # queued audio dropped
    flushed_marks: int


@dataclass
class SimulationResult:
    webhook_status: int = 0
    stream_url: str = ""
    call_sid: str = ""
    stream_sid: str = ""
    frames_sent: int = 0
    bytes_sent: int = 0
    media_received: int = 0
    bytes_received: int = 0
    bytes_played: int = 0
    marks_received: int = 0
    marks_acked: int = 0
    clears: list[ClearEvent] = field(default_factory=list)
    bytes_after_last_clear: int = 0
    first_audio_s: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    duration_s: float = 0.0
    unexpected: list[str] = field(default_factory=list)
    mark_acked_at: list[float] = field(default_factory=list)  # time.monotonic() of each ack
    media_received_at: list[float] = field(default_factory=list)  # time.monotonic() of each
    frames_sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each
    twiml: str = ""
    forked: bool = False  # a `<Start><Stream>` fork: one-way, both tracks
    media_received_bytes: list[int] = field(default_factory=list)  # the audio of each
    output_ulaw: bytes = b""

    def summary(self) -> str:
        ttfa = f"{self.first_audio_s * 1000:.0f} ms" if self.first_audio_s is not None else "-"
        rows = [
            ("webhook", f"HTTP {self.webhook_status}"),
            ("call / stream", f"{self.call_sid} / {self.stream_sid}"),
            ("sent", f"{self.bytes_sent} B in {self.frames_sent} frames"),
            ("received", f"{self.bytes_received} B in {self.media_received} media messages"),
            ("played", f"{self.bytes_played} B ({self.bytes_played / 8000:.2f} s)"),
            ("marks", f"{self.marks_received} received, {self.marks_acked} acknowledged"),
            ("clears", str(len(self.clears))),
            ("stream", "a one-way fork of both tracks" if self.forked else "bidirectional"),
            ("time to first audio", ttfa),
            ("stream closed", f"{self.close_code} {self.close_reason}".strip()),
            ("duration", f"{self.duration_s:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class _Playback:
    """Twilio's playback buffer: audio and marks, in order."""

    def __init__(self) -> None:
        self.queue: deque[bytes | str] = deque()  # bytes = audio, str = mark name
        self.frame_started_at = 0.0
        self.frame_bytes = 0
        self.played_since_clear = 0
        self.reached: list[str] = []  # marks passed by the frame now playing, acked at its end

    def take_frame(self) -> tuple[bytes, list[str]]:
        """The next 20 ms to play, and the marks that playing it reaches.

        Playback runs straight across marks, like Twilio's; a mark counts as reached when
        the audio before it has finished, i.e. at the end of the frame it falls in.
        """
        frame = bytearray()
        reached: list[str] = []
        while self.queue and len(frame) < FRAME_BYTES:
            head = self.queue.popleft()
            if isinstance(head, str):
                reached.append(head)
                continue
            need = FRAME_BYTES - len(frame)
            frame += head[:need]
            if len(head) > need:
                self.queue.appendleft(head[need:])
        while self.queue and isinstance(self.queue[0], str):
            reached.append(str(self.queue.popleft()))
        return bytes(frame), reached


async def simulate(
    url: str,
    *,
    auth_token: str | None = None,
    say: bytes = b"",
    barge_in_at_s: float | None = None,
    barge_in: bytes = b"",
    duration_s: float | None = None,
    fast: bool = False,
    stream_url: str | None = None,
    from_number: str = "+15550100001",
    to_number: str = "+15550100002",
    dtmf: list[tuple[float, str]] | None = None,
    sign_upgrade: bool = True,
    account_sid: str | None = None,
    webhook_query: dict[str, str] | None = None,
    direction: str = "inbound",
    call_sid: str | None = None,
    agent: bytes = b"",
    odd_tracks: dict[int, str | None] | None = None,
) -> SimulationResult:
    """Place one simulated call. Audio arguments are 8 kHz μ-law bytes.

    When the TwiML forks the call (`<Start><Stream track="both_tracks">` beside a `<Dial>`),
    the phone streams both tracks as Twilio does: `say` is the caller (`inbound`), `agent`
    the person who answered (`outbound`), each frame labelled. `odd_tracks` relabels the
    caller's frame at an index (None: no track at all), as a hostile peer would."""
    result = SimulationResult()
    call_sid = call_sid or "CA" + secrets.token_hex(16)
    account_sid = account_sid or "AC" + secrets.token_hex(16)
    result.call_sid = call_sid
    voice_url = url.rstrip("/") + "/twilio/voice"
    if webhook_query:
        voice_url += "?" + urlencode(webhook_query)
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "Caller": from_number,
        "Direction": direction,
        "From": from_number,
        "To": to_number,
    }
    headers = {}
    if auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(
            voice_url, params
        )
    async with aiohttp.ClientSession() as http:
        # encoded=True: send the URL exactly as signed (yarl would requote "%2C" as ",").
        target = yarl.URL(voice_url, encoded=True)
        async with http.post(target, data=params, headers=headers) as response:
            result.webhook_status = response.status
            twiml = await response.text()
    result.twiml = twiml
    if result.webhook_status != 200:
        return result
    document = ET.fromstring(twiml)
    stream = document.find("./Connect/Stream")
    if stream is None:
        stream = document.find("./Start/Stream")
        result.forked = stream is not None
    if stream is None:
        raise ValueError("TwiML has no <Connect><Stream> or <Start><Stream>")
    result.stream_url = stream_url or stream.attrib["url"]
    custom = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    upgrade_headers = {}
    if auth_token and sign_upgrade:
        upgrade_headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(
            stream.attrib["url"], {}
        )
    stream_sid = "MZ" + secrets.token_hex(16)
    result.stream_sid = stream_sid
    if duration_s is None:
        duration_s = max(len(say), len(barge_in), len(agent)) / 8000 + (barge_in_at_s or 0) + 5.0
    try:
        async with websockets.connect(
            result.stream_url, additional_headers=upgrade_headers, compression=None
        ) as ws:
            await _run_stream(
                ws,
                result,
                account_sid,
                custom,
                say,
                barge_in_at_s,
                barge_in,
                duration_s,
                fast,
                dtmf or [],
                agent if result.forked else None,
                odd_tracks or {},
            )
            result.close_code = ws.close_code
            result.close_reason = ws.close_reason or ""
    except websockets.InvalidStatus as exc:
        result.close_code = exc.response.status_code
        result.close_reason = "upgrade rejected"
    return result


async def _run_stream(
    ws: websockets.ClientConnection,
    result: SimulationResult,
    account_sid: str,
    custom: dict[str, str],
    say: bytes,
    barge_in_at_s: float | None,
    barge_in: bytes,
    duration_s: float,
    fast: bool,
    dtmf: list[tuple[float, str]],
    agent: bytes | None,
    odd_tracks: dict[int, str | None],
) -> None:
    sid = result.stream_sid
    tracks = ("inbound",) if agent is None else ("inbound", "outbound")
    seq = 0

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    await ws.send(twilio.phone_connected())
    await ws.send(twilio.phone_start(sid, result.call_sid, account_sid, custom, next_seq(), tracks))
    started = time.monotonic()
    playback = _Playback()
    output = bytearray()
    closed = asyncio.Event()
    pending_dtmf = sorted(dtmf)

    async def send(frame: str) -> None:
        try:
            await ws.send(frame)
        except websockets.ConnectionClosed:
            closed.set()

    async def ack(names: list[str]) -> None:
        for name in names:
            result.marks_acked += 1
            result.mark_acked_at.append(time.monotonic())
            await send(twilio.phone_mark(sid, name, next_seq()))

    async def receiver() -> None:
        try:
            async for raw in ws:
                try:
                    message = twilio.decode_outbound(raw)
                except TwilioProtocolError:
                    result.unexpected.append(str(raw)[:200])
                    continue
                match message:
                    case twilio.OutboundMedia(_, audio):
                        if result.first_audio_s is None:
                            result.first_audio_s = time.monotonic() - started
                        result.media_received += 1
                        result.media_received_at.append(time.monotonic())
                        result.media_received_bytes.append(len(audio))
                        result.bytes_received += len(audio)
                        result.bytes_after_last_clear += len(audio)
                        playback.queue.append(audio)
                    case twilio.OutboundMark(_, name):
                        result.marks_received += 1
                        playback.queue.append(name)
                    case twilio.OutboundClear():
                        await clear()
                if fast:
                    await play_all()
        except websockets.ConnectionClosed:
            pass
        closed.set()

    async def clear() -> None:
        now = time.monotonic()
        in_flight = playback.frame_bytes
        elapsed_ms = (now - playback.frame_started_at) * 1000
        played_ms = (playback.played_since_clear - in_flight) / 8 + min(
            in_flight / 8, max(0.0, elapsed_ms)
        )
        flushed = [*playback.reached, *playback.queue]
        playback.queue.clear()
        playback.reached = []
        marks = [name for name in flushed if isinstance(name, str)]
        result.clears.append(
            ClearEvent(
                at_s=now - started,
                played_ms=played_ms,
                flushed_bytes=sum(len(b) for b in flushed if isinstance(b, bytes)),
                flushed_marks=len(marks),
            )
        )
        result.bytes_after_last_clear = 0
        playback.played_since_clear = 0
        playback.frame_bytes = 0
        await ack(marks)  # Twilio returns pending marks at once on clear

    async def play_all() -> None:
        while playback.queue:
            frame, reached = playback.take_frame()
            await ack(reached)
            output.extend(frame)
            result.bytes_played += len(frame)
            playback.played_since_clear += len(frame)

    async def player() -> None:
        tick = 0
        while not closed.is_set():
            target = started + tick * FRAME_MS / 1000
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due, playback.reached = playback.reached, []
            await ack(due)
            frame, playback.reached = playback.take_frame()
            playback.frame_started_at = time.monotonic()
            playback.frame_bytes = len(frame)
            result.bytes_played += len(frame)
            playback.played_since_clear += len(frame)
            output.extend(frame + SILENCE[len(frame) :])
            tick += 1

    async def sender() -> None:
        frames_total = int(duration_s * 1000 / FRAME_MS)
        barge_frame = None if barge_in_at_s is None else int(barge_in_at_s * 1000 / FRAME_MS)
        for index in range(frames_total):
            if closed.is_set():
                return
            if not fast:
                delay = started + index * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            at_s = index * FRAME_MS / 1000
            while pending_dtmf and pending_dtmf[0][0] <= at_s:
                _, digit = pending_dtmf.pop(0)
                await send(twilio.phone_dtmf(sid, digit, next_seq()))
            if barge_frame is not None and index >= barge_frame:
                offset = (index - barge_frame) * FRAME_BYTES
                source = barge_in
            else:
                offset = index * FRAME_BYTES
                source = say
            frame = source[offset : offset + FRAME_BYTES]
            frame += SILENCE[len(frame) :]
            result.frames_sent += 1
            result.bytes_sent += len(frame)
            result.frames_sent_at.append(time.monotonic())
            track = odd_tracks.get(index, "inbound")
            await send(twilio.phone_media(sid, frame, index, next_seq(), track))
            if agent is not None:
                heard = agent[index * FRAME_BYTES : (index + 1) * FRAME_BYTES]
                heard += SILENCE[len(heard) :]
                await send(twilio.phone_media(sid, heard, index, next_seq(), "outbound"))
        await send(twilio.phone_stop(sid, result.call_sid, account_sid, next_seq()))
        await ws.close()

    tasks = [asyncio.create_task(receiver()), asyncio.create_task(sender())]
    if not fast:
        tasks.append(asyncio.create_task(player()))
    try:
        await closed.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.duration_s = time.monotonic() - started
    result.output_ulaw = bytes(output)
