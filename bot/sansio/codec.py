"""Audio codec for the bridge: G.711 μ-law 8 kHz ⇄ PCM16 24 kHz, streaming and stateful.

Twilio speaks 8 kHz μ-law; the Realtime API's `audio/pcm` is 24 kHz PCM16 little-endian.
Resampling by exactly 3 uses one linear-phase low-pass FIR in polyphase form (see
shared/reference/audio.md): `audioop.ratecv` has no anti-alias filter at all.

The filter taps are integers (Q20) and the arithmetic is float64, where every product and
sum of int16 samples and Q20 taps is exact. Output is therefore bit-identical whatever the
chunking and whatever order BLAS sums in.
"""

from __future__ import annotations

import warnings
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

with warnings.catch_warnings():
    # Python 3.11/3.12 ship a deprecated stdlib audioop; 3.13+ gets audioop-lts.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FILTER_TAPS",
    "PCM16_BYTES_PER_MS",
    "ULAW_BYTES_PER_MS",
    "Downsampler",
    "InboundTranscoder",
    "OutboundTranscoder",
    "PassthroughInbound",
    "PassthroughOutbound",
    "Pcm16ToUlaw",
    "UlawToPcm16",
    "Upsampler",
    "design_lowpass",
    "pcm16_ms",
    "ulaw_ms",
]

TWILIO_RATE_HZ: Final = 8000
REALTIME_RATE_HZ: Final = 24000
RATIO: Final = REALTIME_RATE_HZ // TWILIO_RATE_HZ
ULAW_BYTES_PER_MS: Final = TWILIO_RATE_HZ // 1000  # 1 byte per sample
PCM16_BYTES_PER_MS: Final = 2 * REALTIME_RATE_HZ // 1000  # 2 bytes per sample

FILTER_TAPS: Final = 84  # multiple of RATIO: 28 taps per polyphase branch
_CUTOFF_HZ: Final = 3900.0
_KAISER_BETA: Final = 7.0
_Q: Final = 1 << 20  # tap scale; int16 x Q20 x 84 taps stays far below 2**53

Float64Array = npt.NDArray[np.float64]


def ulaw_ms(n_bytes: int) -> float:
    """Duration of `n_bytes` of 8 kHz μ-law."""
    return n_bytes / ULAW_BYTES_PER_MS


def pcm16_ms(n_bytes: int) -> float:
    """Duration of `n_bytes` of 24 kHz PCM16 mono."""
    return n_bytes / PCM16_BYTES_PER_MS


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
    """8 kHz → 24 kHz PCM16, stateful. Every input sample yields exactly 3 output samples."""

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history: Float64Array = np.zeros(_UP_HISTORY)

    def process(self, pcm16_8k: bytes) -> bytes:
        if not pcm16_8k:
            return b""
        x = np.concatenate((self._history, np.frombuffer(pcm16_8k, dtype="<i2")))
        self._history = x[-_UP_HISTORY:]
        windows = _windows(x, 0, x.shape[0] - _UP_HISTORY, _UP_BRANCH_TAPS, 1)
        return _to_int16_bytes((windows @ _UP_MATRIX).reshape(-1))

    def reset(self) -> None:
        self._history = np.zeros(_UP_HISTORY)


class Downsampler:
    """24 kHz → 8 kHz PCM16 with the anti-alias filter, stateful.

    Input is taken in frames of 3 samples; output n is the filter over frames n..n+27.
    Computing it as one GEMM (frames x 3) @ (3 x 28) followed by a sum along the
    diagonals keeps BLAS on contiguous data (overlapping windows would force a copy).
    Held back: 27 frames of filter history (1.65 ms group delay) and at most 2 samples
    that do not yet fill a frame.
    """

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history: Float64Array = np.zeros(_DOWN_HISTORY)

    def process(self, pcm16_24k: bytes) -> bytes:
        if not pcm16_24k:
            return b""
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


class InboundTranscoder(Protocol):
    """Caller audio (μ-law bytes from Twilio) → bytes in the Realtime session's input format."""

    def process(self, ulaw: bytes) -> bytes: ...


class OutboundTranscoder(Protocol):
    """Model audio (bytes in the session's output format) → μ-law bytes for Twilio."""

    def process(self, audio: bytes) -> bytes: ...

    def reset(self) -> None: ...


class UlawToPcm16:
    """μ-law 8 kHz → PCM16 24 kHz."""

    __slots__ = ("_up",)

    def __init__(self) -> None:
        self._up = Upsampler()

    def process(self, ulaw: bytes) -> bytes:
        return self._up.process(audioop.ulaw2lin(ulaw, 2))


class Pcm16ToUlaw:
    """PCM16 24 kHz → μ-law 8 kHz. Deltas may split a sample: an odd byte waits for the next."""

    __slots__ = ("_carry", "_down")

    def __init__(self) -> None:
        self._down = Downsampler()
        self._carry = b""

    def process(self, audio: bytes) -> bytes:
        if self._carry:
            audio = self._carry + audio
        if len(audio) & 1:
            audio, self._carry = audio[:-1], audio[-1:]
        else:
            self._carry = b""
        pcm8k = self._down.process(audio)
        return audioop.lin2ulaw(pcm8k, 2) if pcm8k else b""

    def reset(self) -> None:
        self._down.reset()
        self._carry = b""


class PassthroughInbound:
    """`g711_ulaw` sessions: Twilio's μ-law goes to the model untouched."""

    __slots__ = ()

    def process(self, ulaw: bytes) -> bytes:
        return ulaw


class PassthroughOutbound:
    """`g711_ulaw` sessions: the model's μ-law goes to Twilio untouched."""

    __slots__ = ()

    def process(self, audio: bytes) -> bytes:
        return audio

    def reset(self) -> None:
        pass
