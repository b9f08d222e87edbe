"""A listened call's fork: Twilio's `<Start><Stream track="both_tracks">` socket, one
transcription session per track, and the call log.

The fork is one-way: nothing is ever sent back to Twilio. The call itself is Twilio's
`<Dial>` to a person and goes on whatever happens here. A transcription session that
fails is reopened within `REALTIME_RECONNECT_S`; past that the fork stops (its socket
closes, the `<Dial>` goes on) and the failure is an event on the call.

One session per track, not one for both: a speaker is then known from where the audio
came from, even when both talk at once (`scripts/bench_fork.py` measures both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bot.call.admission import Admitted
from bot.call.channels import ChannelClosed, RealtimeChannel, TwilioChannel
from bot.call.core.messages import TurnRecord
from bot.call.core.session import CallStats
from bot.call.journal import CallJournal, SessionLabel
from bot.calllog.recorder import CallRecorder
from bot.cluster.core.messages import ControlAction
from bot.core.twilio import TwilioMedia, TwilioStart, TwilioStop
from bot.errors import TwilioProtocolError
from bot.listen.core.fork import SPEAKERS, Fork
from bot.listen.tracks import TrackTranscriber, drain
from bot.store.schema import utcnow

if TYPE_CHECKING:
    from bot.call.loop import CallServices

__all__ = ["LISTEN_MODE", "MODE_PARAMETER", "ListenedCall", "Transcriber"]

MODE_PARAMETER: Final = "mode"
LISTEN_MODE: Final = "listen"

logger = logging.getLogger("bot.listen")


@dataclass(frozen=True)
class Transcriber:
    """How transcription sessions are opened, and what the call log says about them."""

    open: Callable[[], Awaitable[RealtimeChannel]]
    pcm16: bool  # the session takes 24 kHz PCM16 (else Twilio's μ-law, untouched)
    manual: bool  # no turn detection: the bridge commits
    label: SessionLabel  # provider, model, dialect; audio mode "listen"
    reconnect_s: float = 5.0


class ListenedCall:
    """One admitted fork stream, registered like a call (controls do not apply to it)."""

    def __init__(self, channel: TwilioChannel, services: CallServices, admitted: Admitted):
        assert services.transcriber is not None
        self.twilio = channel
        self.services = services
        self.transcriber = services.transcriber
        self.start: TwilioStart = admitted.start
        self.log = admitted.log
        self.errors = admitted.errors
        self.fork = Fork(admitted.start.tracks)
        self.tracks = {
            name: TrackTranscriber(
                name,
                SPEAKERS[name],
                self.transcriber,
                services.call_log,
                admitted.start.call_sid,
                admitted.log,
                self._turn,
            )
            for name in self.fork.tracks
        }
        self._stats = CallStats()
        self._stop = asyncio.Event()
        self._stop_reason = "the fork was stopped"
        self._recorder = None
        if services.recordings is not None:
            self._recorder = CallRecorder(
                services.recordings / f"{self.call_sid}-{self.start.stream_sid}.wav",
                (services.settings.max_call_s or 4 * 3600) * 1000,
            )
        journal = CallJournal(
            self.call_sid, services.call_log, services.metrics, admitted.log, self._recorder
        )
        self._journal = journal

    # ---- what the registry sees ------------------------------------------------------------

    @property
    def call_sid(self) -> str:
        return self.start.call_sid

    @property
    def stats(self) -> CallStats:
        return self._stats

    def end(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def deliver_verdict(self, answered_by: str) -> None:
        pass

    def control(self, action: ControlAction, words: str) -> None:
        self.log.warning("a listened call takes no %s: a person is on it", action)

    async def hand_over(self) -> None:
        pass  # the fork ends with this instance; the call goes on with Twilio

    def moved(self) -> None:
        pass

    # ---- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        services, call_log, call_sid = self.services, self.services.call_log, self.call_sid
        started = time.monotonic()
        self._journal.started(
            self.start.stream_sid, self.start.custom_parameters, self.transcriber.label
        )
        call_log.event(
            call_sid, 0, "listen", f"transcribing {', '.join(self.fork.tracks)} (a person answers)"
        )
        self.log.info("listening to the call: tracks %s", ", ".join(self.fork.tracks))
        end_by, reason = "caller", "stream ended"
        sessions = [asyncio.create_task(self._transcribe(track)) for track in self.tracks.values()]
        reader = asyncio.create_task(self._read_twilio())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                end_by, reason = reader.result()
                await drain(list(self.tracks.values()))
            else:
                end_by, reason = "bridge", self._stop_reason
        except Exception:  # a bug must not leave the fork half open
            self.log.exception("listening failed")
            end_by, reason = "bridge", "listening failed"
        finally:
            self._stop.set()
            reader.cancel()
            stopper.cancel()
            await self._close()
            await asyncio.wait(sessions, timeout=2)
            for session in sessions:
                session.cancel()
        if self._recorder is not None:
            with contextlib.suppress(OSError):
                self._recorder.close()
        skipped = sum(self.fork.skipped.values())
        if skipped:
            detail = ", ".join(f"{n} {why}" for why, n in self.fork.skipped.items())
            call_log.event(call_sid, None, "skipped_frames", f"media frames skipped: {detail}")
            for why, n in self.fork.skipped.items():
                services.metrics.skipped_frames.labels(reason=why).inc(n)
        failures = [t for t in self.tracks.values() if t.failed is not None]
        if failures and end_by != "caller":
            end_by = "realtime"
        call_log.call(call_sid, ended_at=utcnow(), ended_by=end_by, end_reason=reason)
        services.metrics.call_finished(f"listen_{end_by}", None)
        try:
            await asyncio.wait_for(services.cluster.release(call_sid), 2)
        except Exception as exc:  # the heartbeat sweep frees it if this instance stops
            self.log.warning("could not free the call's slot (%s)", type(exc).__name__)
        services.after_call(call_sid)
        self.log.info(
            "listening ended by %s (%s) after %.1f s: frames %s, skipped %d",
            end_by,
            reason,
            time.monotonic() - started,
            dict(self.fork.frames),
            skipped,
        )

    async def _read_twilio(self) -> tuple[str, str]:
        """Frames until the stream ends: (who ended it, why)."""
        while not self._stop.is_set():
            try:
                event = await self.twilio.receive()
            except ChannelClosed as closed:
                return "caller", closed.reason
            except TwilioProtocolError as exc:
                self.errors.report("twilio", exc)
                continue
            match event:
                case TwilioMedia(ulaw, timestamp_ms, track):
                    await self._media(ulaw, timestamp_ms, track)
                case TwilioStop():
                    return "caller", "Twilio stopped the stream"
                case _:
                    pass  # marks and digits do not concern a fork
        return "bridge", "the fork was stopped"

    async def _media(self, ulaw: bytes, timestamp_ms: int | None, track_name: str | None) -> None:
        audio = self.fork.media(ulaw, track_name)
        if audio is None:
            return
        self._stats.frames_in += 1
        track = self.tracks[audio.track]
        at_ms = timestamp_ms if timestamp_ms is not None else self.fork.frames[audio.track] * 20
        if self._recorder is not None:
            if audio.track == "inbound":
                self._recorder.caller(audio.ulaw, at_ms)
            else:
                self._recorder.bot(audio.ulaw, at_ms + len(audio.ulaw) // 8)
        await track.feed(audio.ulaw, at_ms)

    def _turn(self, record: TurnRecord) -> None:
        self.services.call_log.turn(self.call_sid, record)
        self.log.info("%s: %s", record.speaker, (record.text or "")[:80])

    async def _transcribe(self, track: TrackTranscriber) -> None:
        """A track's transcription; if it is given up, the fork stops (the call goes on)."""
        failed = await track.run()
        if failed is None:
            return
        message = f"{track.name} transcription failed: {failed}; the fork stops"
        self.log.error("%s (the call goes on)", message)
        call_log = self.services.call_log
        call_log.event(self.call_sid, None, "error", message)
        call_log.increment(self.call_sid, errors=1)
        self.services.metrics.realtime_errors.inc()
        self.end(f"{track.name} transcription failed")

    async def _close(self) -> None:
        self._stop.set()
        for track in self.tracks.values():
            await track.close()
        with contextlib.suppress(Exception):
            await self.twilio.close(1000, "fork over")
