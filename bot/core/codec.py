"""Audio conversions: G.711 μ-law 8 kHz ⇄ PCM16 24 kHz, streaming and stateful, and helpers.

Twilio speaks 8 kHz μ-law; the Realtime API's `audio/pcm` is 24 kHz PCM16 little-endian.
Resampling by exactly 3 uses one linear-phase low-pass FIR in polyphase form (see
shared/reference/audio.md): `audioop.ratecv` has no anti-alias filter at all.

The filter taps are integers (Q20) and the arithmetic is float64, where every product and
sum of int16 samples and Q20 taps is exact. Output is therefore bit-identical whatever the
chunking and whatever order BLAS sums in, and the same filter in C (`_fir.c`, built at
install; `FAST`) gives the same bytes for about half the CPU per chunk.
"""

from __future__ import annotations

import math
import warnings
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import soxr

with warnings.catch_warnings():
    # Python 3.11/3.12 ship a deprecated stdlib audioop; 3.13+ gets audioop-lts. This is the
    # only import of it: everything else uses the helpers below.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FAST",
    "FILTER_TAPS",
    "PCM16_BYTES_PER_MS",
    "TWILIO_RATE_HZ",
    "ULAW_BYTES_PER_MS",
    "ULAW_SILENCE",
    "Downsampler",
    "PassthroughTranscoder",
    "Pcm16Transcoder",
    "Transcoder",
    "Upsampler",
    "dbfs",
    "design_lowpass",
    "interleave_stereo",
    "pcm16_to_ulaw",
    "resample",
    "rms",
    "to_pcm16_mono",
    "ulaw_to_pcm16",
]

TWILIO_RATE_HZ: Final = 8000
REALTIME_RATE_HZ: Final = 24000
RATIO: Final = REALTIME_RATE_HZ // TWILIO_RATE_HZ
ULAW_BYTES_PER_MS: Final = TWILIO_RATE_HZ // 1000  # 1 byte per sample
PCM16_BYTES_PER_MS: Final = 2 * REALTIME_RATE_HZ // 1000  # 2 bytes per sample
ULAW_SILENCE: Final = 0xFF  # μ-law code of a zero sample

FILTER_TAPS: Final = 84  # multiple of RATIO: 28 taps per polyphase branch
_CUTOFF_HZ: Final = 3900.0
_KAISER_BETA: Final = 7.0
_Q: Final = 1 << 20  # tap scale; int16 x Q20 x 84 taps stays far below 2**53

Float64Array = npt.NDArray[np.float64]


def design_lowpass(
    ntaps: int = FILTER_TAPS, cutoff_hz: float = _CUTOFF_HZ, beta: float = _KAISER_BETA
) -> Float64Array:
    """Windowed-sinc low-pass at 24 kHz, unity DC gain, taps rounded to integers in Q20."""
    n = np.arange(ntaps) - (ntaps - 1) / 2
    fc = cutoff_hz / REALTIME_RATE_HZ
    taps = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(ntaps, beta)
    taps /= taps.sum()
    quantized: Float64Array = np.rint(taps * _Q)
    return quantized


_TAPS_Q20: Final = design_lowpass()
try:  # the same filter in C, built with the package when a compiler is there (hatch_build.py)
    from bot.core import _fir

    _fir.set_taps(_TAPS_Q20.astype("<i8").tobytes())
    _built = True
except ImportError:
    _built = False
FAST: Final = _built and np.little_endian  # the C code reads samples in native order
# Upsampler: branch k of output sample 3n+k uses taps k, k+3, ...; x3 restores the gain
# lost to zero-stuffing. Rows are reversed so a forward sliding window lines up with them.
# Scaling by 2**-20 is exact in binary floating point, so it is folded into the taps.
_UP_MATRIX: Final = np.ascontiguousarray((RATIO * _TAPS_Q20 / _Q).reshape(-1, RATIO)[::-1])
_UP_BRANCH_TAPS: Final = FILTER_TAPS // RATIO
_UP_HISTORY: Final = _UP_BRANCH_TAPS - 1
# Downsampler: column j holds taps 3j..3j+2 (the filter is symmetric, so no reversal).
_DOWN_BRANCH_TAPS: Final = FILTER_TAPS // RATIO
_DOWN_MATRIX: Final = np.ascontiguousarray((_TAPS_Q20 / _Q).reshape(_DOWN_BRANCH_TAPS, RATIO).T)
_DOWN_HISTORY: Final = (_DOWN_BRANCH_TAPS - 1) * RATIO
_ITEM: Final = 8  # bytes per float64
_INT16_MAX: Final = np.float64(32767)
_INT16_MIN: Final = np.float64(-32768)


def _windows(x: Float64Array, first: int, count: int, width: int, step: int) -> Float64Array:
    """Overlapping windows of `x` as a strided view (sliding_window_view costs ~20x more)."""
    return np.ndarray((count, width), np.float64, x, first * _ITEM, (step * _ITEM, _ITEM))


def _to_int16_bytes(acc: Float64Array) -> bytes:
    np.rint(acc, out=acc)
    np.minimum(acc, _INT16_MAX, out=acc)
    np.maximum(acc, _INT16_MIN, out=acc)
    return acc.astype("<i2").tobytes()


class Upsampler:
    """8 kHz → 24 kHz PCM16, stateful. Every input sample yields exactly 3 output samples.

    In C when `_fir` was built (`FAST`), else in numpy: bit-identical either way.
    """

    __slots__ = ("_history", "_samples", "_fast")

    def __init__(self, fast: bool | None = None) -> None:
        self._fast = FAST if fast is None else fast and FAST
        self._history: Float64Array = np.zeros(_UP_HISTORY)
        self._samples = bytearray(2 * _UP_HISTORY)  # the C path's history, int16

    def process(self, pcm16_8k: bytes) -> bytes:
        if not pcm16_8k:
            return b""
        if self._fast:
            return _fir.upsample(self._samples, pcm16_8k)
        x = np.concatenate((self._history, np.frombuffer(pcm16_8k, dtype="<i2")))
        self._history = x[-_UP_HISTORY:]
        windows = _windows(x, 0, x.shape[0] - _UP_HISTORY, _UP_BRANCH_TAPS, 1)
        return _to_int16_bytes((windows @ _UP_MATRIX).reshape(-1))

    def reset(self) -> None:
        self._history = np.zeros(_UP_HISTORY)
        self._samples = bytearray(2 * _UP_HISTORY)


class Downsampler:
    """24 kHz → 8 kHz PCM16 with the anti-alias filter, stateful.

    Input is taken in frames of 3 samples; output n is the filter over frames n..n+27.
    Computing it as one GEMM (frames x 3) @ (3 x 28) followed by a sum along the
    diagonals keeps BLAS on contiguous data (overlapping windows would force a copy).
    Held back: 27 frames of filter history (1.65 ms group delay) and at most 2 samples
    that do not yet fill a frame.
    """

    __slots__ = ("_history", "_samples", "_fast")

    def __init__(self, fast: bool | None = None) -> None:
        self._fast = FAST if fast is None else fast and FAST
        self._history: Float64Array = np.zeros(_DOWN_HISTORY)
        self._samples = bytearray(2 * _DOWN_HISTORY)  # the C path's history, int16

    def process(self, pcm16_24k: bytes) -> bytes:
        if not pcm16_24k:
            return b""
        if self._fast:
            return _fir.downsample(self._samples, pcm16_24k)
        x = np.concatenate((self._history, np.frombuffer(pcm16_24k, dtype="<i2")))
        frames = x.shape[0] // RATIO
        count = frames - _DOWN_BRANCH_TAPS + 1
        if count <= 0:
            self._history = x
            return b""
        self._history = x[count * RATIO :]
        products = x[: frames * RATIO].reshape(frames, RATIO) @ _DOWN_MATRIX
        diagonals = np.ndarray(
            (count, _DOWN_BRANCH_TAPS),
            np.float64,
            products,
            0,
            (_DOWN_BRANCH_TAPS * _ITEM, (_DOWN_BRANCH_TAPS + 1) * _ITEM),
        )
        return _to_int16_bytes(diagonals.sum(axis=1))

    def reset(self) -> None:
        self._history = np.zeros(_DOWN_HISTORY)
        self._samples = bytearray(2 * _DOWN_HISTORY)


class Transcoder(Protocol):
    """Both directions of one call's audio: Twilio's μ-law ⇄ the Realtime session's format."""

    def to_model(self, ulaw: bytes) -> bytes:
        """Caller audio for the model, in the session's input format."""
        ...

    def to_caller(self, audio: bytes) -> bytes:
        """Model audio, in the session's output format, as μ-law for Twilio."""
        ...

    def forget_answer(self) -> None:
        """Drop what is held of an interrupted answer, so none of it leaks into the next."""
        ...


class Pcm16Transcoder:
    """μ-law 8 kHz ⇄ PCM16 24 kHz through the polyphase FIR.

    Model deltas may split a sample: an odd byte waits for the next delta.
    """

    __slots__ = ("_carry", "_down", "_up")

    def __init__(self) -> None:
        self._up = Upsampler()
        self._down = Downsampler()
        self._carry = b""

    def to_model(self, ulaw: bytes) -> bytes:
        return self._up.process(audioop.ulaw2lin(ulaw, 2))

    def to_caller(self, audio: bytes) -> bytes:
        if self._carry:
            audio = self._carry + audio
        if len(audio) & 1:
            audio, self._carry = audio[:-1], audio[-1:]
        else:
            self._carry = b""
        pcm8k = self._down.process(audio)
        return audioop.lin2ulaw(pcm8k, 2) if pcm8k else b""

    def forget_answer(self) -> None:
        self._down.reset()
        self._carry = b""


class PassthroughTranscoder:
    """`g711_ulaw` sessions: μ-law goes both ways untouched."""

    __slots__ = ()

    def to_model(self, ulaw: bytes) -> bytes:
        return ulaw

    def to_caller(self, audio: bytes) -> bytes:
        return audio

    def forget_answer(self) -> None:
        pass


# ---- helpers for the rest of the package -------------------------------------------------


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """μ-law → PCM16 at the same rate."""
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    """PCM16 → μ-law at the same rate."""
    return audioop.lin2ulaw(pcm16, 2)


def rms(pcm16: bytes) -> int:
    return int(audioop.rms(pcm16, 2))


def dbfs(pcm16: bytes) -> float:
    """Level of PCM16 audio in dB relative to a full-scale sine."""
    level = audioop.rms(pcm16, 2)
    return 20 * math.log10(level * math.sqrt(2) / 32767) if level else -120.0


def resample(pcm16: bytes, from_hz: int, to_hz: int) -> bytes:
    """One-shot, anti-aliased resampling of a whole clip (soxr HQ): never per frame, since
    soxr's streaming mode holds tens of milliseconds back."""
    if from_hz == to_hz or not pcm16:
        return pcm16
    samples = np.frombuffer(pcm16, dtype="<i2")
    converted = soxr.resample(samples, from_hz, to_hz, quality="HQ")
    return np.asarray(converted, dtype="<i2").tobytes()


def to_pcm16_mono(frames: bytes, sample_width: int, channels: int) -> bytes:
    """Linear PCM of any width (8-bit unsigned, as WAV stores it) and 1-2 channels → PCM16 mono.

    Raises:
        ValueError: more than two channels.
    """
    if sample_width == 1:
        frames = audioop.bias(frames, 1, -128)
    pcm = audioop.lin2lin(frames, sample_width, 2) if sample_width != 2 else frames
    if channels == 2:
        return audioop.tomono(pcm, 2, 0.5, 0.5)
    if channels != 1:
        raise ValueError(f"{channels} channels are not supported")
    return pcm


def interleave_stereo(left: bytes, right: bytes) -> bytes:
    """Two PCM16 channels of equal length as one interleaved stereo stream."""
    stereo = np.empty(len(left), dtype="<i2")
    stereo[0::2] = np.frombuffer(left, dtype="<i2")
    stereo[1::2] = np.frombuffer(right, dtype="<i2")
    return stereo.tobytes()
