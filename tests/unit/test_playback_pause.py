"""Pause, then decide, in the playback ledger: a false interruption plays the rest of the
answer from where the caller stopped hearing it, byte for byte; a real one cuts there."""

from __future__ import annotations

import numpy as np

from bot.call.core.playback import Playback
from bot.core.codec import PassthroughTranscoder
from bot.core.twilio import OutboundClear, OutboundMark, OutboundMedia, TwilioMessage


def answer(seconds: float, seed: int = 1) -> bytes:
    """Distinct μ-law bytes, so that any repeat or gap shows."""
    return np.random.default_rng(seed).integers(0, 256, int(seconds * 8000), np.uint8).tobytes()


def ledger() -> Playback:
    return Playback("MZ1", PassthroughTranscoder(), 8, resumable=True)


def media(messages: list[TwilioMessage]) -> bytes:
    return b"".join(m.ulaw for m in messages if isinstance(m, OutboundMedia))


def marks(messages: list[TwilioMessage]) -> list[str]:
    return [m.name for m in messages if isinstance(m, OutboundMark)]


def test_a_false_interruption_plays_the_rest_byte_for_byte() -> None:
    playback = ledger()
    audio = answer(2.0)
    sent: list[TwilioMessage] = []
    for start in range(0, 8000, 800):  # the first second, in 100 ms deltas, at once
        sent += playback.add("item_1", "resp_1", audio[start : start + 800], 0)
    first = marks(sent)[0]
    playback.acknowledge(first, 110)  # the first 100 ms played by 110 ms
    # The caller coughs at 330 ms: 320 ms heard (100 ms + 220 ms since the echo): 16 whole
    # frames, and the 17th just begun, which the phone finishes.
    assert isinstance(playback.pause("resp_1", 330), OutboundClear)
    assert playback.paused and not playback.idle
    # The model goes on meanwhile: held, not sent.
    held_now = playback.add("item_1", "resp_1", audio[8000:12000], 400)
    assert held_now == []
    held_now = playback.add("item_1", "resp_1", audio[12000:], 500) + playback.flush(500)
    assert held_now == []
    assert playback.acknowledge(marks(sent)[1], 520) is None  # flushed by the clear
    resumed = playback.resume(600)
    heard_before = 17 * 160
    assert audio[:heard_before] + media(resumed) == audio  # the whole answer, once
    assert marks(resumed)  # its end is marked: the answer's end is known again
    for name in marks(resumed):
        playback.acknowledge(name, 3000)
    assert playback.idle
    item = playback.item("item_1")
    assert item is not None and item.fully_heard and item.heard_ulaw_bytes == len(audio)


def test_a_confirmed_interruption_cuts_where_the_pause_found_it() -> None:
    playback = ledger()
    audio = answer(1.0)
    sent = []
    for start in range(0, 8000, 800):
        sent += playback.add("item_1", "resp_1", audio[start : start + 800], 0)
    playback.acknowledge(marks(sent)[0], 130)  # 100 ms played by 130 ms
    playback.pause("resp_1", 530)  # and 400 ms more since
    playback.add("item_1", "resp_1", answer(0.5, 2), 600)
    [cut] = playback.confirm()
    assert cut.item.item_id == "item_1" and cut.audio_end_ms == 500
    assert cut.received_ms == 1500
    assert not playback.paused and playback.idle
    assert playback.resume(700) == []  # nothing is held any more


def test_a_pause_with_nothing_queued_holds_what_comes() -> None:
    playback = ledger()
    assert playback.pause("resp_1", 0) is None  # nothing to clear
    audio = answer(0.3)
    assert playback.add("item_1", "resp_1", audio, 10) == []
    resumed = playback.resume(100)
    assert media(resumed) == audio and marks(resumed)


def test_the_rest_starts_after_the_frame_that_was_playing() -> None:
    playback = ledger()
    audio = answer(1.0)
    sent: list[TwilioMessage] = []
    for start in range(0, 8000, 800):
        sent += playback.add("item_1", "resp_1", audio[start : start + 800], 0)
    playback.acknowledge(marks(sent)[0], 110)
    playback.pause("resp_1", 215)  # 205 ms heard: the 11th frame was under way
    assert audio[: 11 * 160] + media(playback.resume(300)) == audio
