"""The call as the caller experienced it: caller on the left, bot on the right, 8 kHz PCM16.

Both channels are placed on the call's timeline (Twilio media timestamps). The bot channel
holds only audio Twilio confirmed as played (acknowledged marks), so audio flushed by a
barge-in never appears. Audio is released for writing once it is `hold_ms` old, so late
placements still land in place.
"""

from __future__ import annotations

from typing import Final

from bot.core.codec import interleave_stereo, ulaw_to_pcm16

__all__ = ["StereoTimeline"]

_BYTES_PER_MS: Final = 16  # PCM16 at 8 kHz


class StereoTimeline:
    def __init__(self, hold_ms: int = 2000) -> None:
        self._left = bytearray()
        self._right = bytearray()
        self._released_ms = 0  # everything before this is written out
        self._bot_cursor_ms = 0
        self._hold_ms = hold_ms

    def add_caller(self, ulaw: bytes, at_ms: int) -> None:
        self._place(self._left, ulaw_to_pcm16(ulaw), at_ms)

    def add_bot(self, ulaw: bytes, ended_ms: int) -> None:
        """Played bot audio that finished at `ended_ms`; contiguous playback stays contiguous."""
        duration_ms = len(ulaw) // 8
        start_ms = max(self._bot_cursor_ms, ended_ms - duration_ms, self._released_ms)
        self._place(self._right, ulaw_to_pcm16(ulaw), start_ms)
        self._bot_cursor_ms = start_ms + duration_ms

    def take_ready(self, now_ms: int) -> bytes:
        """Interleaved stereo frames older than the hold time."""
        return self._release(max(self._released_ms, now_ms - self._hold_ms))

    def take_all(self) -> bytes:
        end_ms = max(len(self._left), len(self._right)) // _BYTES_PER_MS + self._released_ms
        return self._release(end_ms)

    def _place(self, channel: bytearray, pcm: bytes, at_ms: int) -> None:
        offset = (at_ms - self._released_ms) * _BYTES_PER_MS
        if offset < 0:
            pcm, offset = pcm[-offset:], 0
        end = offset + len(pcm)
        if len(channel) < end:
            channel.extend(bytes(end - len(channel)))
        channel[offset:end] = pcm

    def _release(self, until_ms: int) -> bytes:
        n = (until_ms - self._released_ms) * _BYTES_PER_MS
        if n <= 0:
            return b""
        for channel in (self._left, self._right):
            if len(channel) < n:
                channel.extend(bytes(n - len(channel)))
        left, right = bytes(self._left[:n]), bytes(self._right[:n])
        del self._left[:n], self._right[:n]
        self._released_ms = until_ms
        return interleave_stereo(left, right)
