"""The playback ledger: model audio goes to Twilio one message per delta, with marks now and
then; acknowledged marks move what the caller has heard, and the clock places the caller
among the messages sent since.

Each delta is counted on the model's side of the codec (`received_bytes` of its item),
transcoded to μ-law and cut to whole 20 ms chunks; the chunks of one delta go to Twilio as
one `media` message (a short rest waits for the next delta). A uniquely named `mark`
follows an item's first message, its last, and a message whenever `MARK_EVERY_MS` of audio
went out since the last mark. The ledger remembers, per message sent and not yet
acknowledged, which item it belongs to, how much of that item's μ-law ends with it, and
when it was sent. Twilio echoes a mark when the audio before it has played. `clear`
forgets every pending message, so the echoes Twilio sends for flushed audio find nothing:
the heard position of an item never includes audio the caller did not hear.

Inside a message Twilio cannot run dry: once a message starts, it plays to its end. So at
a barge-in the heard position is the last acknowledged mark plus what the messages after
it have played, replayed on the clock: each started when the one before it ended (the
first: when the mark's echo arrived) or when it was sent (plus half a packet), whichever
came later; an underrun between messages is the gap between the two. The shell keeps the
call clock to the millisecond between Twilio's 20 ms frames (`CallSession.advance_clock`).
This keeps the truncation error within 20 ms, as one mark per 20 ms chunk did, with a
fifth of the marks when deltas are short and one message per delta when they are long.

Pause, then decide (`pause`, `confirm`, `resume`): when the caller may be interrupting,
Twilio's queue is cleared at once, but what the caller has not heard is kept, from each
item's heard position on, and new audio is held. A confirmed interruption cuts the items
there, as `interrupt` does; a false one (a cough, an "uh-huh") sends the held audio again,
so the caller hears the whole answer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from bot.core.codec import ULAW_BYTES_PER_MS, Transcoder
from bot.core.twilio import OutboundClear, OutboundMark, OutboundMedia, TwilioMessage

__all__ = ["CHUNK_ULAW_BYTES", "Cut", "Heard", "ItemPlayback", "Playback", "PlaybackStats"]

CHUNK_ULAW_BYTES: Final = 160  # 20 ms: Twilio's frame, and the call clock's step
# Audio that finds Twilio's queue empty waits for the next 20 ms packet: 10 ms on average.
PLAYOUT_ALIGN_MS: Final = 10
# Messages between marks are placed by the clock; a mark now and then re-anchors it.
MARK_EVERY_MS: Final = 100
PAUSE_LOOKAHEAD_MS: Final = 8  # the clock runs a few ms behind the phone (marks come late)
RESUME_MESSAGE_BYTES: Final = 8000  # audio played again after a pause: a second a message


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
    """What acknowledged marks moved: each item that advanced, whether its first audio was
    heard just now, and how many ms of it played; and the μ-law played, when audio is kept."""

    items: list[tuple[ItemPlayback, bool, int]]
    audio: bytes


@dataclass(frozen=True, slots=True)
class Cut:
    """An item stopped at what the caller heard, clamped to the audio the model produced."""

    item: ItemPlayback
    audio_end_ms: int
    received_ms: int
    heard_ulaw_bytes: int = 0  # where the caller stopped hearing it, in μ-law


@dataclass(slots=True)
class PlaybackStats:
    frames_out: int = 0
    marks_sent: int = 0
    marks_played: int = 0
    clears: int = 0


@dataclass(slots=True)
class _Sent:
    """A media message, and the mark after it if it has one."""

    item: ItemPlayback
    end_ulaw_bytes: int
    ulaw_bytes: int  # in the message
    sent_ms: int  # on the call clock
    ulaw: bytes  # kept when recording, or to resume after a pause
    mark: str | None


@dataclass(frozen=True, slots=True)
class _Held:
    """Audio of an item not yet heard, waiting for `resume`."""

    item: ItemPlayback
    ulaw: bytes


@dataclass(eq=False)
class Playback:
    stream_sid: str
    transcoder: Transcoder
    bytes_per_ms: int  # of the model's output format
    keep_audio: bool = False  # for the recording
    stats: PlaybackStats = field(default_factory=PlaybackStats)
    resumable: bool = False  # keep what is sent until it is heard, for `pause`

    def __post_init__(self) -> None:
        self._items: dict[str, ItemPlayback] = {}
        self._sent: deque[_Sent] = deque()  # not yet acknowledged, in order
        self._marks: set[str] = set()  # the names among them
        self._since_mark_ms = 0  # audio sent after the newest mark
        self._mark_seq = 0
        self._last_ack_ms = 0  # when the newest acknowledged mark came back
        self._partial = b""
        self._partial_item: ItemPlayback | None = None
        self._held: list[_Held] | None = None  # paused: what waits for `resume`
        self._pause_cuts: list[Cut] = []

    @property
    def idle(self) -> bool:
        """Nothing sent is still unheard, and nothing waits to be sent."""
        return not self._sent and not self._partial and not self._held

    @property
    def paused(self) -> bool:
        return self._held is not None

    def received_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else item.received_bytes // self.bytes_per_ms

    def add(self, item_id: str, response_id: str, audio: bytes, now_ms: int) -> list[TwilioMessage]:
        """Model audio for an item: its whole 20 ms chunks go now as one message, the rest
        waits for more."""
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = ItemPlayback(item_id, response_id)
        messages: list[TwilioMessage] = []
        if self._partial_item is not None and self._partial_item is not item:
            messages += self.flush(now_ms)
        item.received_bytes += len(audio)
        ulaw = self.transcoder.to_caller(audio)
        if self._partial:
            ulaw = self._partial + ulaw
        full = len(ulaw) - len(ulaw) % CHUNK_ULAW_BYTES
        if full and self._held is not None:
            self._held.append(_Held(item, ulaw[:full]))
        elif full:
            messages += self._send(item, ulaw[:full], now_ms)
        self._partial = ulaw[full:]
        self._partial_item = item if self._partial else None
        return messages

    def flush(self, now_ms: int) -> list[TwilioMessage]:
        """Send the short last chunk (the model's audio for the item is done), and a mark
        after the item's last audio, so that its end is known."""
        item, chunk = self._partial_item, self._partial
        self._partial, self._partial_item = b"", None
        if self._held is not None:
            if item is not None and chunk:
                self._held.append(_Held(item, chunk))
            return []
        if item is not None and chunk:
            return self._send(item, chunk, now_ms, last=True)
        if self._sent and self._sent[-1].mark is None:
            return [self._mark(self._sent[-1])]
        return []

    def _send(
        self, item: ItemPlayback, ulaw: bytes, now_ms: int, last: bool = False
    ) -> list[TwilioMessage]:
        first = item.sent_ulaw_bytes == 0
        item.sent_ulaw_bytes += len(ulaw)
        kept = ulaw if self.keep_audio or self.resumable else b""
        sent = _Sent(item, item.sent_ulaw_bytes, len(ulaw), now_ms, kept, None)
        self._sent.append(sent)
        self.stats.frames_out += 1
        self._since_mark_ms += len(ulaw) // ULAW_BYTES_PER_MS
        media = OutboundMedia(self.stream_sid, ulaw)
        # A mark on an item's first audio (when it was first heard), every MARK_EVERY_MS of
        # audio (the clock needs an anchor now and then), and after its last.
        if first or last or self._since_mark_ms >= MARK_EVERY_MS:
            return [media, self._mark(sent)]
        return [media]

    def _mark(self, sent: _Sent) -> OutboundMark:
        self._mark_seq += 1
        sent.mark = f"m{self._mark_seq}"
        self._marks.add(sent.mark)
        self._since_mark_ms = 0
        self.stats.marks_sent += 1
        return OutboundMark(self.stream_sid, sent.mark)

    def acknowledge(self, name: str, now_ms: int) -> Heard | None:
        """Twilio echoed a mark; None if it was flushed by a clear, or is not ours."""
        if name not in self._marks:
            return None
        self._marks.discard(name)
        advanced: dict[str, tuple[ItemPlayback, bool, int]] = {}
        played = b""
        # Twilio plays in order: marks before this one have played too.
        while self._sent:
            mark = self._sent.popleft()
            item = mark.item
            _, first, ms = advanced.get(item.item_id, (item, item.heard_ulaw_bytes == 0, 0))
            item.heard_ulaw_bytes = mark.end_ulaw_bytes
            advanced[item.item_id] = (item, first, ms + mark.ulaw_bytes // ULAW_BYTES_PER_MS)
            played += mark.ulaw
            if mark.mark == name:
                self.stats.marks_played += 1
                break
            if mark.mark is not None:  # an earlier mark whose echo is still on its way
                self._marks.discard(mark.mark)
                self.stats.marks_played += 1
        self._last_ack_ms = now_ms
        return Heard(list(advanced.values()), played)

    def _playing_now(self, now_ms: int) -> dict[str, int]:
        """μ-law bytes per item played of messages whose marks are still pending: Twilio's
        queue replayed on the call clock, each message starting when the one before it ended
        or when it was sent, whichever is later."""
        playing: dict[str, int] = {}
        cursor = self._last_ack_ms
        for mark in self._sent:
            start = max(cursor, mark.sent_ms + PLAYOUT_ALIGN_MS)
            if start >= now_ms:
                break
            played = min(mark.ulaw_bytes, (now_ms - start) * ULAW_BYTES_PER_MS)
            item_id = mark.item.item_id
            playing[item_id] = playing.get(item_id, 0) + played
            cursor = start + mark.ulaw_bytes // ULAW_BYTES_PER_MS
        return playing

    def interrupt(
        self, active_response: str | None, now_ms: int
    ) -> tuple[OutboundClear | None, list[Cut]]:
        """The caller spoke: clear what is queued at Twilio, and cut every item the caller
        has not heard completely (or whose response is still being generated)."""
        clear = OutboundClear(self.stream_sid) if self._sent else None
        if clear is not None:
            self.stats.clears += 1
        if self._held is not None:  # cut where the pause found it, not now
            cuts, clear = self.confirm(), None
        else:
            cuts = self._cuts(active_response, now_ms)
        self._sent.clear()
        self._marks.clear()
        self._since_mark_ms = 0
        self._partial, self._partial_item = b"", None
        self.transcoder.forget_answer()
        # Items are kept only while they may need cutting; the rest are done.
        self._items.clear()
        return clear, cuts

    def pause(self, active_response: str | None, now_ms: int) -> OutboundClear | None:
        """The caller may be interrupting: stop Twilio at once, keep what was not heard (and
        hold what comes) until `confirm` or `resume`. Needs `resumable`."""
        if self._held is not None:
            return None
        assert self.resumable, "pause needs the audio kept (resumable)"
        clear = OutboundClear(self.stream_sid) if self._sent else None
        if clear is not None:
            self.stats.clears += 1
        self._pause_cuts = self._cuts(active_response, now_ms)
        # The phone plays whole 20 ms frames, and finishes the one under way: the audio to
        # play again starts after it (unless nothing plays past the last acknowledged mark).
        # The phone plays whole 20 ms frames and finishes the one under way, so the audio to
        # play again starts after it. The clock runs a little behind the phone (each mark's
        # echo comes late): a frame that starts within the look-ahead counts as begun.
        ahead = self._playing_now(now_ms + PAUSE_LOOKAHEAD_MS)
        heard: dict[str, int] = {}
        for cut in self._pause_cuts:
            item = cut.item
            position = item.heard_ulaw_bytes + ahead.get(item.item_id, 0)
            if position > item.heard_ulaw_bytes:
                position = (position // CHUNK_ULAW_BYTES + 1) * CHUNK_ULAW_BYTES
            heard[item.item_id] = min(position, item.sent_ulaw_bytes)
        held: list[_Held] = []
        for sent in self._sent:
            item = sent.item
            start = sent.end_ulaw_bytes - sent.ulaw_bytes
            skip = max(0, heard.get(item.item_id, sent.end_ulaw_bytes) - start)
            if skip < sent.ulaw_bytes:
                held.append(_Held(item, sent.ulaw[skip:]))
        for cut in self._pause_cuts:
            item = cut.item
            item.heard_ulaw_bytes = item.sent_ulaw_bytes = heard[item.item_id]
        self._sent.clear()
        self._marks.clear()
        self._since_mark_ms = 0
        self._held = held
        return clear

    def confirm(self) -> list[Cut]:
        """The interruption was real: every item is cut where the pause found it."""
        cuts = [  # what the model produced meanwhile counts as received, not heard
            Cut(
                c.item,
                c.audio_end_ms,
                c.item.received_bytes // self.bytes_per_ms,
                c.heard_ulaw_bytes,
            )
            for c in self._pause_cuts
        ]
        self._pause_cuts = []
        self._held = None
        self._partial, self._partial_item = b"", None
        self.transcoder.forget_answer()
        self._items.clear()
        return cuts

    def resume(self, now_ms: int) -> list[TwilioMessage]:
        """It was not an interruption: play what the caller has not heard, from where they
        stopped hearing it, then what came meanwhile."""
        held, self._held = self._held or [], None
        self._pause_cuts = []
        messages: list[TwilioMessage] = []
        for index, chunk in enumerate(held):
            # A mark after each item's last held audio: its end is known again.
            item_ends = index + 1 == len(held) or held[index + 1].item is not chunk.item
            for start in range(0, len(chunk.ulaw), RESUME_MESSAGE_BYTES):
                piece = chunk.ulaw[start : start + RESUME_MESSAGE_BYTES]
                last = item_ends and start + RESUME_MESSAGE_BYTES >= len(chunk.ulaw)
                messages += self._send(chunk.item, piece, now_ms, last=last)
        return messages

    def _cuts(self, active_response: str | None, now_ms: int) -> list[Cut]:
        """Every item the caller has not heard completely (or whose response is still being
        generated), at what they heard of it."""
        playing = self._playing_now(now_ms)
        cuts = []
        for item in self._items.values():
            if (
                item.fully_heard
                and item.response_id != active_response
                and item is not self._partial_item
            ):
                continue
            received_ms = item.received_bytes // self.bytes_per_ms
            heard_bytes = item.heard_ulaw_bytes + playing.get(item.item_id, 0)
            heard_ms = min(heard_bytes // ULAW_BYTES_PER_MS, received_ms)
            cuts.append(Cut(item, heard_ms, received_ms, heard_bytes))
        return cuts

    def forget_response(self, response_id: str) -> None:
        """The response is over: its fully heard items need no more bookkeeping."""
        if self._held is not None:
            return  # paused: its audio may be played again
        done = [
            item_id
            for item_id, item in self._items.items()
            if item.response_id == response_id
            and item.fully_heard
            and item is not self._partial_item
        ]
        for item_id in done:
            del self._items[item_id]

    def unheard(self) -> set[str]:
        """The items the caller has not heard completely yet (queued, playing or held)."""
        waiting = {item.item_id for item in self._items.values() if not item.fully_heard}
        if self._partial_item is not None:
            waiting.add(self._partial_item.item_id)
        if self._held:
            waiting.update(held.item.item_id for held in self._held)
        return waiting

    def item(self, item_id: str) -> ItemPlayback | None:
        return self._items.get(item_id)
