"""The codec against the bar in issue 2, item 6, with a control that shows the test bites."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bot.core.codec import (
    FAST,
    Downsampler,
    PassthroughTranscoder,
    Pcm16Transcoder,
    Upsampler,
    interleave_stereo,
    pcm16_to_ulaw,
    resample,
    to_pcm16_mono,
    ulaw_to_pcm16,
)
from tests.audio_tools import level_dbfs_at, ratecv, rms_dbfs, samples, tone


@pytest.mark.parametrize("freq_hz", [5000, 6000, 7000, 8000, 9000, 10000, 11000])
def test_downsampling_rejects_aliases_by_60_db(freq_hz: int) -> None:
    out = Downsampler().process(tone(freq_hz, 1.0, 24000, dbfs=-6))
    assert rms_dbfs(out) <= -6 - 60


def test_ratecv_fails_the_alias_bar_so_the_measurement_is_meaningful() -> None:
    out = ratecv(tone(6000, 1.0, 24000, dbfs=-6), 24000, 8000)
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
    assert _chunked(Pcm16Transcoder().to_caller, speechlike, seed, 1999, even=False) == (
        Pcm16Transcoder().to_caller(speechlike)
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_c_resampler_is_built_and_matches_numpy_bit_for_bit(seed: int) -> None:
    """`bot/core/_fir.c` (built by hatch_build.py at install) against the numpy path: noise
    from quiet to clipping, in chunks of any even size, both ways."""
    assert FAST, "bot/core/_fir.c was not built: see the install's output"
    rng = np.random.default_rng(seed)
    for cls, rate in ((Upsampler, 8000), (Downsampler, 24000)):
        level = rng.uniform(100, 60_000)
        noise = (rng.standard_normal(rate) * level).clip(-32768, 32767).astype("<i2").tobytes()
        assert _chunked(cls(fast=True).process, noise, seed, 1500, even=True) == _chunked(
            cls(fast=False).process, noise, seed, 1500, even=True
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
    ulaw = pcm16_to_ulaw(tone(1000, 1.0, 8000, dbfs=-10))
    pcm24 = Pcm16Transcoder().to_model(ulaw)
    assert len(pcm24) == len(ulaw) * 6
    back = ulaw_to_pcm16(Pcm16Transcoder().to_caller(pcm24))
    assert level_dbfs_at(back, 1000, 8000) == pytest.approx(-10, abs=0.5)


def test_forgetting_an_answer_forgets_its_history() -> None:
    codec = Pcm16Transcoder()
    codec.to_caller(tone(1000, 0.1, 24000) + b"\x01")  # leaves history and an odd byte
    codec.forget_answer()
    fresh = Pcm16Transcoder()
    chunk = tone(500, 0.1, 24000)
    assert codec.to_caller(chunk) == fresh.to_caller(chunk)


def test_passthrough_is_the_identity() -> None:
    payload = bytes(range(256))
    assert PassthroughTranscoder().to_model(payload) is payload
    assert PassthroughTranscoder().to_caller(payload) is payload


def test_whole_clips_are_resampled_with_an_anti_alias_filter() -> None:
    """For speech the local backend makes or hears: 22.05 kHz voices, 16 kHz Whisper."""
    alias = resample(tone(6000, 1.0, 22050, dbfs=-6), 22050, 8000)
    assert rms_dbfs(alias) < -6 - 60  # above 4 kHz: filtered, not folded
    kept = resample(tone(1000, 1.0, 22050, dbfs=-6), 22050, 8000)
    assert level_dbfs_at(kept, 1000, 8000) == pytest.approx(-6, abs=0.5)
    assert len(resample(tone(1000, 1.0, 8000), 8000, 16000)) == 2 * 16000


def test_wav_frames_of_any_width_become_pcm16_mono() -> None:
    assert to_pcm16_mono(bytes([128, 255]), 1, 1) == b"\x00\x00\x00\x7f"
    stereo = interleave_stereo(b"\x10\x00\x20\x00", b"\x30\x00\x40\x00")
    assert stereo == b"\x10\x00\x30\x00\x20\x00\x40\x00"
    assert to_pcm16_mono(stereo, 2, 2) == b"\x20\x00\x30\x00"
    with pytest.raises(ValueError, match="channels"):
        to_pcm16_mono(b"\0" * 12, 2, 3)
