from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bot.core.codec import pcm16_to_ulaw, ulaw_to_pcm16
from bot.simulator import load_wav_as_ulaw, write_wav
from tests.audio_tools import dominant_hz, level_dbfs_at


def write_tone(path: Path, rate: int, width: int, channels: int, freq_hz: float = 700) -> None:
    t = np.arange(rate) / rate
    x = 0.3 * np.sin(2 * np.pi * freq_hz * t)
    if width == 1:
        data = np.rint(128 + 127 * x).astype(np.uint8)
    else:
        data = np.rint(x * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}")
    if channels == 2:
        data = np.repeat(data, 2)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(data.tobytes())


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(8000, 2, 1), (16000, 2, 1), (24000, 2, 2), (44100, 2, 1), (48000, 4, 2), (22050, 1, 1)],
)
def test_any_wav_becomes_8k_ulaw_at_the_right_pitch_and_level(
    tmp_path: Path, rate: int, width: int, channels: int
) -> None:
    path = tmp_path / "in.wav"
    write_tone(path, rate, width, channels)
    ulaw = load_wav_as_ulaw(path)
    assert len(ulaw) == pytest.approx(8000, abs=8)
    pcm = ulaw_to_pcm16(ulaw)
    assert dominant_hz(pcm, 8000) == pytest.approx(700, abs=5)
    assert level_dbfs_at(pcm, 700, 8000) == pytest.approx(20 * np.log10(0.3), abs=1)


def test_recording_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    ulaw = bytes(range(256))
    write_wav(path, ulaw)
    assert load_wav_as_ulaw(path) == pcm16_to_ulaw(ulaw_to_pcm16(ulaw))
