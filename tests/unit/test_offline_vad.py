"""The offline speech services: WebRTC's VAD on phone and wideband audio, and eSpeak NG."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.core.codec import resample
from bot.localrt.offline import offline_available

pytestmark = pytest.mark.skipif(offline_available() is not None, reason="offline extra missing")


def frames(pcm: bytes, rate_hz: int) -> list[bytes]:
    size = 20 * 2 * rate_hz // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


@pytest.mark.parametrize("rate_hz", [8000, 24000])
def test_webrtc_vad_hears_speech_and_not_silence(rate_hz: int) -> None:
    from bot.localrt.offline import PiperVoice, WebRtcVad

    speech = asyncio.run(
        PiperVoice(varied=False).synthesize("Where is my order four four one seven?", "joe")
    )
    pcm = resample(speech.pcm16, speech.rate_hz, rate_hz)
    vad = WebRtcVad()
    decisions = [vad(frame, rate_hz, 0.5) for frame in frames(pcm, rate_hz)]
    assert sum(decisions) / len(decisions) > 0.5  # most of a spoken sentence is speech
    quiet = WebRtcVad()
    assert not any(quiet(frame, rate_hz, 0.5) for frame in frames(bytes(2 * rate_hz), rate_hz))


def test_espeak_is_a_usable_light_voice() -> None:
    from bot.localrt.offline import EspeakVoice, WhisperTranscriber

    speech = asyncio.run(EspeakVoice().synthesize("Your order 4417 arrives on Friday.", "x"))
    assert 1.5 < len(speech.pcm16) / (2 * speech.rate_hz) < 5  # seconds
    heard = asyncio.run(WhisperTranscriber().transcribe(speech.pcm16, speech.rate_hz, None))
    heard = heard.lower().replace(",", "")
    assert "order" in heard and "friday" in heard  # robotic, but understood


def test_local_tts_setting_picks_the_voice(tmp_path: Path) -> None:
    from bot.config import Settings
    from bot.localrt.demo_agent import DemoAgent
    from bot.localrt.offline import EspeakVoice
    from bot.localrt.services import local_providers

    settings = Settings.from_env({"LOCAL_TTS": "espeak", "BOT_DATA_DIR": str(tmp_path)})
    providers = local_providers(settings.local)
    assert isinstance(providers.tts, EspeakVoice)
    # The demo agent's prompt primes speech-to-text unless LOCAL_STT_PROMPT says otherwise.
    assert providers.transcription_prompt == DemoAgent.TRANSCRIPTION_PROMPT
    primed = Settings.from_env({"LOCAL_TTS": "espeak", "LOCAL_STT_PROMPT": "Names: Dana."})
    assert local_providers(primed.local).transcription_prompt == "Names: Dana."


def test_the_noise_gate_lets_a_steady_hum_become_the_floor_but_not_speech_over_it() -> None:
    import numpy as np

    from bot.core.realtime.events import TurnDetection
    from bot.localrt.core.vad import SpeechStarted, TurnTracker

    rate = 8000
    rng = np.random.default_rng(5)

    def frames(level: float, seconds: float) -> list[bytes]:
        audio = rng.normal(0, level, int(seconds * rate)).clip(-32768, 32767).astype("<i2")
        raw = audio.tobytes()
        return [raw[i : i + 320] for i in range(0, len(raw), 320)]

    vad = TurnDetection()
    tracker = TurnTracker()
    events = []
    at = 0
    # A fan at -34 dBFS: loud enough for the energy detector (-40 dBFS), so without a gate
    # it starts a turn; the gate learns it within seconds.
    for frame in frames(600, 20.0):
        at += 20
        change = tracker.frame(frame, rate, at, vad)
        if change is not None:
            events.append((at, change))
    # A turn may open at the start, before the hum is known; none after 12 s.
    assert not [e for e in events if e[0] > 12_000 and isinstance(e[1], SpeechStarted)]
    assert not tracker.speaking
    # Speech over the hum still starts a turn.
    started = None
    for frame in frames(6000, 0.5):
        at += 20
        change = tracker.frame(frame, rate, at, vad)
        if isinstance(change, SpeechStarted):
            started = change
    assert started is not None
