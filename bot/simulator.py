"""`bot simulate`: a phone that plays Twilio's side of a call against any bridge URL.

It fetches TwiML from the voice webhook (signed when it knows the auth token), opens the
`<Stream>` it names, sends `connected` and `start` with the TwiML's `<Parameter>`s, streams
a WAV file as 20 ms μ-law frames and plays what comes back like Twilio does: in order, at
real-time pace, acknowledging each mark only once the audio before it has played, and
dropping its buffer on `clear` (sending back the marks that will now never play).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import warnings
import wave
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import aiohttp
import websockets
from twilio.request_validator import RequestValidator

from bot.config import load_local_secret
from bot.sansio.codec import Downsampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["ClearEvent", "SimulationResult", "load_wav_as_ulaw", "simulate"]

FRAME_MS: Final = 20
FRAME_BYTES: Final = 160
SILENCE: Final = b"\xff" * FRAME_BYTES  # μ-law zero


def load_wav_as_ulaw(path: Path) -> bytes:
    """Any PCM WAV (rate, width, channels) → 8 kHz mono μ-law."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width == 1:
        frames = audioop.bias(frames, 1, -128)  # WAV stores 8-bit samples unsigned
    pcm = audioop.lin2lin(frames, width, 2) if width != 2 else frames
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"{path}: {channels} channels are not supported")
    if rate != 8000:
        if rate != 24000:
            pcm, _ = audioop.ratecv(pcm, 2, 1, rate, 24000, None)
        pcm = Downsampler().process(pcm)
    return audioop.lin2ulaw(pcm, 2)


def write_wav(path: Path, ulaw: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(audioop.ulaw2lin(ulaw, 2))


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
) -> SimulationResult:
    """Place one simulated call. Audio arguments are 8 kHz μ-law bytes."""
    result = SimulationResult()
    call_sid = "CA" + secrets.token_hex(16)
    account_sid = (
        account_sid
        or os.environ.get("TWILIO_ACCOUNT_SID", "").strip()
        or "AC" + secrets.token_hex(16)
    )
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
        async with http.post(voice_url, data=params, headers=headers) as response:
            result.webhook_status = response.status
            twiml = await response.text()
    if result.webhook_status != 200:
        return result
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        raise ValueError("TwiML has no <Connect><Stream>")
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
        duration_s = max(len(say), len(barge_in)) / 8000 + (barge_in_at_s or 0) + 5.0
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
) -> None:
    sid = result.stream_sid
    seq = 0

    def next_seq() -> str:
        nonlocal seq
        seq += 1
        return str(seq)

    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": next_seq(),
                "start": {
                    "accountSid": account_sid,
                    "streamSid": sid,
                    "callSid": result.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": sid,
            }
        )
    )
    started = time.monotonic()
    playback = _Playback()
    output = bytearray()
    closed = asyncio.Event()
    pending_dtmf = sorted(dtmf)

    async def send_json(message: dict[str, object]) -> None:
        try:
            await ws.send(json.dumps(message))
        except websockets.ConnectionClosed:
            closed.set()

    async def ack(names: list[str]) -> None:
        for name in names:
            result.marks_acked += 1
            result.mark_acked_at.append(time.monotonic())
            await send_json(
                {
                    "event": "mark",
                    "sequenceNumber": next_seq(),
                    "streamSid": sid,
                    "mark": {"name": name},
                }
            )

    async def receiver() -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                event = message.get("event")
                if event == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    if result.first_audio_s is None:
                        result.first_audio_s = time.monotonic() - started
                    result.media_received += 1
                    result.bytes_received += len(audio)
                    result.bytes_after_last_clear += len(audio)
                    playback.queue.append(audio)
                    if fast:
                        await play_all()
                elif event == "mark":
                    result.marks_received += 1
                    playback.queue.append(str(message["mark"]["name"]))
                    if fast:
                        await play_all()
                elif event == "clear":
                    await clear()
                else:
                    result.unexpected.append(str(raw)[:200])
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
                await send_json(
                    {
                        "event": "dtmf",
                        "streamSid": sid,
                        "sequenceNumber": next_seq(),
                        "dtmf": {"track": "inbound_track", "digit": digit},
                    }
                )
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
            await send_json(
                {
                    "event": "media",
                    "sequenceNumber": next_seq(),
                    "media": {
                        "track": "inbound",
                        "chunk": str(index + 1),
                        "timestamp": str(index * FRAME_MS),
                        "payload": base64.b64encode(frame).decode("ascii"),
                    },
                    "streamSid": sid,
                }
            )
        await send_json(
            {
                "event": "stop",
                "sequenceNumber": next_seq(),
                "stop": {"accountSid": account_sid, "callSid": result.call_sid},
                "streamSid": sid,
            }
        )
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


def default_auth_token(data_dir: Path | None = None) -> str | None:
    """TWILIO_AUTH_TOKEN, else the local-mode secret `bot serve` wrote."""
    token = os.environ.get("TWILIO_AUTH_TOKEN", "").strip()
    if token:
        return token
    directory = data_dir or Path(os.environ.get("BOT_DATA_DIR", "").strip() or "data")
    return load_local_secret(directory, create=False)
