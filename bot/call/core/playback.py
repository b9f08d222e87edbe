"""The playback ledger: model audio goes to Twilio in 20 ms chunks, each followed by a mark,
and only acknowledged marks move what the caller has heard.

Each delta is counted on the model's side of the codec (`received_bytes` of its item),
transcoded to μ-law and cut into 20 ms chunks. Every chunk goes to Twilio as `media`
followed by a uniquely named `mark`; the ledger remembers, per pending mark, which item it
belongs to and how much of that item's μ-law ends with it. Twilio echoes a mark when the
audio before it has played. `clear` forgets every pending mark, so the echoes Twilio sends
for flushed audio find nothing: the heard position of an item never includes audio the
caller did not hear.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from bot.core.codec import ULAW_BYTES_PER_MS, Transcoder
from bot.core.twilio import OutboundClear, OutboundMark, OutboundMedia, TwilioMessage

__all__ = ["CHUNK_ULAW_BYTES", "Cut", "Heard", "ItemPlayback", "Playback", "PlaybackStats"]

CHUNK_ULAW_BYTES: Final = 160  # 20 ms: the heard position is known to within one chunk


@dataclass(slots=True)
class ItemPlayback:
    """How far one assistant item got: received from the model, sent, and heard."""

    item_id: str
    response_id: str
    received_bytes: int = 0  # in the session's output format
    sent_ulaw_bytes: int = 0
    heard_ulaw_bytes: int = 0

    @property
    def fully_heard(self) -> bool:
        return self.heard_ulaw_bytes >= self.sent_ulaw_bytes


@dataclass(frozen=True, slots=True)
class Heard:
    """What acknowledged marks moved: each item that advanced (and whether its first audio
    was heard just now), and the μ-law played, when audio is kept."""

    items: list[tuple[ItemPlayback, bool]]
    audio: bytes


@dataclass(frozen=True, slots=True)
class Cut:
    """An item stopped at what the caller heard, clamped to the audio the model produced."""

    item: ItemPlayback
    audio_end_ms: int
    received_ms: int


@dataclass(slots=True)
class PlaybackStats:
    frames_out: int = 0
    marks_sent: int = 0
    marks_played: int = 0
    clears: int = 0


@dataclass(slots=True)
class _Mark:
    item: ItemPlayback
    end_ulaw_bytes: int
    ulaw: bytes  # kept only when recording


@dataclass(eq=False)
class Playback:
    stream_sid: str
    transcoder: Transcoder
    bytes_per_ms: int  # of the model's output format
    keep_audio: bool = False  # for the recording
    stats: PlaybackStats = field(default_factory=PlaybackStats)

    def __post_init__(self) -> None:
        self._items: dict[str, ItemPlayback] = {}
        self._marks: OrderedDict[str, _Mark] = OrderedDict()
        self._mark_seq = 0
        self._partial = b""
        self._partial_item: ItemPlayback | None = None

    @property
    def idle(self) -> bool:
        """Nothing sent is still unheard, and nothing waits to be sent."""
        return not self._marks and not self._partial

    def received_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else item.received_bytes // self.bytes_per_ms

    def add(self, item_id: str, response_id: str, audio: bytes) -> list[TwilioMessage]:
        """Model audio for an item: whole 20 ms chunks go now, the rest waits for more."""
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = ItemPlayback(item_id, response_id)
        messages: list[TwilioMessage] = []
        if self._partial_item is not None and self._partial_item is not item:
            messages += self.flush()
        item.received_bytes += len(audio)
        ulaw = self.transcoder.to_caller(audio)
        if self._partial:
            ulaw = self._partial + ulaw
        full = len(ulaw) - len(ulaw) % CHUNK_ULAW_BYTES
        for start in range(0, full, CHUNK_ULAW_BYTES):
            messages += self._send(item, ulaw[start : start + CHUNK_ULAW_BYTES])
        self._partial = ulaw[full:]
        self._partial_item = item if self._partial else None
        return messages

    def flush(self) -> list[TwilioMessage]:
        """Send the short last chunk (the model's audio for the item is done)."""
        item, chunk = self._partial_item, self._partial
        self._partial, self._partial_item = b"", None
        if item is None or not chunk:
            return []
        return self._send(item, chunk)

    def _send(self, item: ItemPlayback, chunk: bytes) -> list[TwilioMessage]:
        item.sent_ulaw_bytes += len(chunk)
        self._mark_seq += 1
        name = f"m{self._mark_seq}"
        self._marks[name] = _Mark(item, item.sent_ulaw_bytes, chunk if self.keep_audio else b"")
        stats = self.stats
        stats.frames_out += 1
        stats.marks_sent += 1
        return [OutboundMedia(self.stream_sid, chunk), OutboundMark(self.stream_sid, name)]

    def acknowledge(self, name: str) -> Heard | None:
        """Twilio echoed a mark; None if it was flushed by a clear, or is not ours."""
        if name not in self._marks:
            return None
        advanced: list[tuple[ItemPlayback, bool]] = []
        played = b""
        # Twilio plays in order: marks before this one have played too.
        while self._marks:
            pending, mark = self._marks.popitem(last=False)
            item = mark.item
            first = item.heard_ulaw_bytes == 0
            item.heard_ulaw_bytes = mark.end_ulaw_bytes
            played += mark.ulaw
            self.stats.marks_played += 1
            advanced.append((item, first))
            if pending == name:
                break
        return Heard(advanced, played)

    def interrupt(self, active_response: str | None) -> tuple[OutboundClear | None, list[Cut]]:
        """The caller spoke: clear what is queued at Twilio, and cut every item the caller
        has not heard completely (or whose response is still being generated)."""
        clear = OutboundClear(self.stream_sid) if self._marks else None
        if clear is not None:
            self.stats.clears += 1
        cuts = []
        for item in self._items.values():
            if (
                item.fully_heard
                and item.response_id != active_response
                and item is not self._partial_item
            ):
                continue
            received_ms = item.received_bytes // self.bytes_per_ms
            heard_ms = min(item.heard_ulaw_bytes // ULAW_BYTES_PER_MS, received_ms)
            cuts.append(Cut(item, heard_ms, received_ms))
        self._marks.clear()
        self._partial, self._partial_item = b"", None
        self.transcoder.forget_answer()
        # Items are kept only while they may need cutting; the rest are done.
        self._items.clear()
        return clear, cuts

    def forget_response(self, response_id: str) -> None:
        """The response is over: its fully heard items need no more bookkeeping."""
        done = [
            item_id
            for item_id, item in self._items.items()
            if item.response_id == response_id
            and item.fully_heard
            and item is not self._partial_item
        ]
        for item_id in done:
            del self._items[item_id]

    def item(self, item_id: str) -> ItemPlayback | None:
        return self._items.get(item_id)
