from __future__ import annotations

from pathlib import Path

import numpy as np

from bot.calllog.core.timeline import StereoTimeline
from bot.core.codec import pcm16_to_ulaw

LOUD = pcm16_to_ulaw(np.full(160, 8000, "<i2").tobytes())  # 20 ms


def channels(stereo: bytes) -> tuple[np.ndarray, np.ndarray]:
    x = np.frombuffer(stereo, "<i2")
    return x[0::2], x[1::2]


def test_channels_land_on_the_call_timeline() -> None:
    timeline = StereoTimeline(hold_ms=100)
    timeline.add_caller(LOUD, at_ms=0)
    timeline.add_bot(LOUD, ended_ms=60)  # played from 40 to 60 ms
    timeline.add_bot(LOUD, ended_ms=75)  # ack came late: placed right after, not overlapping
    left, right = channels(timeline.take_all())
    assert len(left) == len(right) == 80 * 8
    assert np.all(left[:160] != 0) and np.all(left[160:] == 0)
    assert np.all(right[: 40 * 8] == 0)
    assert np.all(right[40 * 8 : 80 * 8] != 0)


def test_audio_is_released_after_the_hold_time_only() -> None:
    timeline = StereoTimeline(hold_ms=1000)
    for i in range(100):
        timeline.add_caller(LOUD, at_ms=i * 20)
    assert timeline.take_ready(now_ms=500) == b""
    ready = timeline.take_ready(now_ms=2000)
    assert len(ready) == 1000 * 8 * 4
    assert len(timeline.take_all()) == 1000 * 8 * 4


def test_a_leaping_clock_cannot_grow_the_recording_or_its_memory(tmp_path: Path) -> None:
    """Issue 9, finding 7: a timestamp that jumped 30 minutes allocated 57.6 MB at once.
    The session lets the clock leap 2 s a frame at most; the recorder caps the length."""
    from bot.calllog.recorder import CallRecorder

    recorder = CallRecorder(tmp_path / "leap.wav", max_ms=60_000)
    biggest = 0
    for frame in range(3000):
        recorder.caller(b"\xff" * 160, frame * 2000)
        timeline = recorder._timeline
        biggest = max(biggest, len(timeline._left) + len(timeline._right))
    recorder.close()
    assert biggest < 256 * 1024
    assert (tmp_path / "leap.wav").stat().st_size <= 44 + 60_000 * 32
