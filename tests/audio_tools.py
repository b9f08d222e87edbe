"""Signal helpers for tests: tones and their measured level at a known frequency."""

from __future__ import annotations

import math
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the control: ratecv, which has no anti-alias filter


def tone(freq_hz: float, seconds: float, rate: int, dbfs: float = -6.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    amplitude = 32767 * 10 ** (dbfs / 20)
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()


def samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def level_dbfs_at(pcm16: bytes, freq_hz: float, rate: int, skip_s: float = 0.05) -> float:
    """Amplitude of the component at `freq_hz`, in dBFS (a full-scale sine is 0 dBFS)."""
    x = samples(pcm16)[int(skip_s * rate) :]
    n = len(x) - len(x) % rate if len(x) >= rate else len(x)
    x = x[:n]
    t = np.arange(n) / rate
    c = 2 * np.abs(np.sum(x * np.exp(-2j * np.pi * freq_hz * t))) / n
    return 20 * math.log10(max(c, 1e-9) / 32767)


def rms_dbfs(pcm16: bytes, skip_s: float = 0.05, rate: int = 8000) -> float:
    x = samples(pcm16)[int(skip_s * rate) :]
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    return 20 * math.log10(max(rms * math.sqrt(2), 1e-9) / 32767)


def dominant_hz(pcm16: bytes, rate: int) -> float:
    x = samples(pcm16)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def active_region(pcm16: bytes, threshold: int = 200) -> bytes:
    """The stretch from the first to the last sample louder than `threshold`."""
    x = np.frombuffer(pcm16, dtype="<i2")
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return b""
    return x[loud[0] : loud[-1] + 1].tobytes()


def ratecv(pcm16: bytes, from_hz: int, to_hz: int) -> bytes:
    """`audioop.ratecv`, the resampler without an anti-alias filter, as a control."""
    out, _ = audioop.ratecv(pcm16, 2, 1, from_hz, to_hz, None)
    return bytes(out)
