"""One track's transcription session, kept open for as long as the track lasts: audio in,
speaker-labelled turns out. A session that fails is reopened within the reconnect wait;
one that cannot be reopened (or keeps dropping) gives up, and the owner decides what that
means (a listened call's fork stops; a bot's call goes on without its second transcript).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bot.call.channels import ChannelClosed, RealtimeChannel
from bot.call.core.messages import TurnRecord
from bot.core.codec import Pcm16Transcoder, rms, ulaw_to_pcm16
from bot.core.realtime import events as rt
from bot.errors import RealtimeProtocolError, RealtimeUnavailable
from bot.listen.core.fork import ManualTurns, Speaker, TrackTurns

if TYPE_CHECKING:
    from bot.calllog.writer import CallLog
    from bot.listen.stream import Transcriber

__all__ = ["TrackTranscriber"]

DRAIN_S: Final = 3.0  # after the audio ends: the last words' transcripts
MAX_DROPS_A_MINUTE: Final = 3  # a session that keeps dropping is given up
MAX_QUEUED_FRAMES: Final = 500  # 10 s of pushed audio
_RETRY_S: Final = (0.0, 0.25, 0.5, 1.0, 2.0)
_FATAL_CODES: Final = frozenset({"invalid_api_key", "session_expired"})


class TrackTranscriber:
    def __init__(
        self,
        name: str,
        speaker: Speaker,
        transcriber: Transcriber,
        call_log: CallLog,
        call_sid: str,
        log: logging.LoggerAdapter[logging.Logger],
        on_turn: Callable[[TurnRecord], None],
    ) -> None:
        self.name = name
        self.transcriber = transcriber
        self.call_log = call_log
        self.call_sid = call_sid
        self.log = log
        self.on_turn = on_turn
        self.turns = TrackTurns(speaker, manual=ManualTurns() if transcriber.manual else None)
        self.failed: str | None = None  # why it gave up, if it did
        self._transcoder = Pcm16Transcoder() if transcriber.pcm16 else None
        self._channel: RealtimeChannel | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.dropped_frames = 0

    def push(self, ulaw: bytes, at_ms: int) -> None:
        """Audio for the track from synchronous code (a bot's call): fed in 20 ms frames by
        `run`; past 10 s of backlog the newest frames are dropped."""
        for offset in range(0, len(ulaw), 160):
            try:
                self._queue.put_nowait((ulaw[offset : offset + 160], at_ms + offset // 8))
            except asyncio.QueueFull:
                self.dropped_frames += 1

    async def _feed_pushed(self) -> None:
        while True:
            ulaw, at_ms = await self._queue.get()
            await self.feed(ulaw, at_ms)

    async def feed(self, ulaw: bytes, at_ms: int) -> None:
        """20 ms of the track, starting `at_ms` into the call. Lost while (re)opening."""
        if not self._ready.is_set():
            return
        payload = ulaw if self._transcoder is None else self._transcoder.to_model(ulaw)
        await self._send(rt.AppendAudio(payload))
        manual = self.turns.manual
        if manual is not None and manual.frame(rms(ulaw_to_pcm16(ulaw)), at_ms + 20):
            await self._send(rt.CommitAudio())

    async def run(self) -> str | None:
        """Until `close`: None; or why the track's transcription was given up."""
        feeder = asyncio.create_task(self._feed_pushed())
        try:
            return await self._keep_open()
        finally:
            feeder.cancel()

    async def _keep_open(self) -> str | None:
        failed_since: float | None = None
        attempt = 0
        drops: list[float] = []
        while not self._stop.is_set():
            try:
                self._channel = await self.transcriber.open()
            except RealtimeUnavailable as exc:
                self.failed = str(exc)
            else:
                self._ready.set()
                if failed_since is not None:
                    self.call_log.event(
                        self.call_sid, None, "reconnect", f"{self.name} transcription back"
                    )
                failed_since, attempt = None, 0
                self.failed = await self._read()
                self._ready.clear()
                with contextlib.suppress(Exception):
                    await self._channel.close()
                self._channel = None
                if self.failed is None:
                    return None  # closed by us
                drops.append(time.monotonic())
            now = time.monotonic()
            failed_since = failed_since if failed_since is not None else now
            flapping = len([t for t in drops if now - t < 60]) >= MAX_DROPS_A_MINUTE
            if now - failed_since >= self.transcriber.reconnect_s or flapping:
                return self.failed
            delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return None

    async def _read(self) -> str | None:
        channel = self._channel
        assert channel is not None
        while True:
            try:
                event = await channel.receive()
            except ChannelClosed as closed:
                return None if self._stop.is_set() else closed.reason
            except RealtimeProtocolError:
                continue
            match event:
                case rt.InputTranscriptFailed(_, message, _):
                    self.call_log.event(
                        self.call_sid, None, "error", f"{self.name}: no transcript ({message})"
                    )
                case rt.ErrorEvent(code, message):
                    self.log.warning("transcription error %s: %s", code, message)
                    if code in _FATAL_CODES:
                        return f"error {code}: {message}"
                case _:
                    record = self.turns.event(event)
                    if record is not None:
                        self.on_turn(record)

    async def _send(self, event: rt.ClientEvent) -> None:
        channel = self._channel
        if channel is None:
            return
        try:
            await channel.send(event)
        except ChannelClosed:
            self._ready.clear()  # the reader reopens it

    @property
    def waiting(self) -> bool:
        """Words said whose transcript has not come yet."""
        return self._ready.is_set() and bool(self.turns.started or self.turns.partial)

    async def finish(self) -> None:
        """The audio is over: commit what is left."""
        if self._ready.is_set() and (self.turns.manual is not None or self.turns.started):
            await self._send(rt.CommitAudio())

    async def close(self) -> None:
        self._stop.set()
        self._ready.clear()
        channel = self._channel
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()


async def drain(tracks: list[TrackTranscriber]) -> None:
    """Commit what is left and give the last transcripts a moment."""
    for track in tracks:
        await track.finish()
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and any(t.waiting for t in tracks):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
