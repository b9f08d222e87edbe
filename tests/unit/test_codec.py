"""The codec against the bar in issue 2, item 6, with a control that shows the test bites."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from bot.sansio.codec import (
    Downsampler,
    PassthroughInbound,
    PassthroughOutbound,
    Pcm16ToUlaw,
    UlawToPcm16,
    Upsampler,
)
from tests.audio_tools import level_dbfs_at, rms_dbfs, samples, tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


@pytest.mark.parametrize("freq_hz", [5000, 6000, 7000, 8000, 9000, 10000, 11000])
def test_downsampling_rejects_aliases_by_60_db(freq_hz: int) -> None:
    out = Downsampler().process(tone(freq_hz, 1.0, 24000, dbfs=-6))
    assert rms_dbfs(out) <= -6 - 60


def test_ratecv_fails_the_alias_bar_so_the_measurement_is_meaningful() -> None:
    out, _ = audioop.ratecv(tone(6000, 1.0, 24000, dbfs=-6), 2, 1, 24000, 8000, None)
    assert rms_dbfs(out) > -20  # folds to 2 kHz at nearly full level


@pytest.mark.parametrize("freq_hz", [300, 1000, 2000, 3000, 3400])
def test_passband_within_1_db_both_directions(freq_hz: int) -> None:
    down = Downsampler().process(tone(freq_hz, 1.0, 24000, dbfs=-6))
    up = Upsampler().process(tone(freq_hz, 1.0, 8000, dbfs=-6))
    assert level_dbfs_at(down, freq_hz, 8000) == pytest.approx(-6, abs=1)
    assert level_dbfs_at(up, freq_hz, 24000) == pytest.approx(-6, abs=1)


def test_upsampling_suppresses_images() -> None:
    up = Upsampler().process(tone(3000, 1.0, 8000, dbfs=-6))
    for image_hz in (5000, 11000):
        assert level_dbfs_at(up, image_hz, 24000) < -6 - 60


def _chunked(process, data: bytes, seed: int, max_len: int, even: bool) -> bytes:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_len)
        if even:
            n *= 2
        out.append(process(data[i : i + n]))
        i += n
    return b"".join(out)


@pytest.mark.parametrize("seed", range(5))
def test_output_is_identical_whatever_the_chunking(seed: int) -> None:
    speechlike = tone(440, 0.7, 24000) + tone(2900, 0.3, 24000, dbfs=-1) + tone(150, 0.2, 24000)
    assert _chunked(Downsampler().process, speechlike, seed, 900, even=True) == (
        Downsampler().process(speechlike)
    )
    narrow = tone(1000, 0.5, 8000, dbfs=-1)
    assert _chunked(Upsampler().process, narrow, seed, 300, even=True) == Upsampler().process(
        narrow
    )
    # Realtime deltas may split a sample: odd lengths must change nothing.
    assert _chunked(Pcm16ToUlaw().process, speechlike, seed, 1999, even=False) == (
        Pcm16ToUlaw().process(speechlike)
    )


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    square = np.where(np.arange(4800) % 48 < 24, 32767, -32768).astype("<i2").tobytes()
    out = samples(Downsampler().process(square))
    # A wrap-around would put large values of the wrong sign next to each other.
    assert np.max(np.abs(np.diff(out))) < 65535
    assert out.max() <= 32767 and out.min() >= -32768


def test_audio_held_inside_the_resamplers_is_under_10_ms() -> None:
    impulse = np.zeros(2400, dtype="<i2")
    impulse[1200] = 20000
    down = samples(Downsampler().process(impulse.tobytes()))
    delay_down_ms = (int(np.argmax(np.abs(down))) * 3 - 1200) / 24
    impulse8 = np.zeros(800, dtype="<i2")
    impulse8[400] = 20000
    up = samples(Upsampler().process(impulse8.tobytes()))
    delay_up_ms = (int(np.argmax(np.abs(up))) - 1200) / 24
    assert 0 <= delay_down_ms <= 10
    assert 0 <= delay_up_ms <= 10


def test_no_bursts_every_20_ms_frame_comes_out_at_once() -> None:
    down, up = Downsampler(), Upsampler()
    pcm24 = tone(700, 0.4, 24000)
    pcm8 = tone(700, 0.4, 8000)
    down_sizes = {len(down.process(pcm24[i : i + 960])) for i in range(0, len(pcm24), 960)}
    up_sizes = {len(up.process(pcm8[i : i + 320])) for i in range(0, len(pcm8), 320)}
    assert down_sizes == {320}  # 160 samples out for every 480 in
    assert up_sizes == {960}


def test_round_trip_keeps_a_tone_at_its_frequency_and_level() -> None:
    ulaw = audioop.lin2ulaw(tone(1000, 1.0, 8000, dbfs=-10), 2)
    pcm24 = UlawToPcm16().process(ulaw)
    assert len(pcm24) == len(ulaw) * 6
    back = audioop.ulaw2lin(Pcm16ToUlaw().process(pcm24), 2)
    assert level_dbfs_at(back, 1000, 8000) == pytest.approx(-10, abs=0.5)


def test_reset_forgets_history() -> None:
    codec = Pcm16ToUlaw()
    codec.process(tone(1000, 0.1, 24000) + b"\x01")  # leaves history and an odd byte
    codec.reset()
    fresh = Pcm16ToUlaw()
    chunk = tone(500, 0.1, 24000)
    assert codec.process(chunk) == fresh.process(chunk)


def test_passthrough_is_the_identity() -> None:
    payload = bytes(range(256))
    assert PassthroughInbound().process(payload) is payload
    assert PassthroughOutbound().process(payload) is payload
