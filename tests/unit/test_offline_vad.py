from __future__ import annotations

import asyncio

import pytest

from bot.localrt.offline import offline_available

pytestmark = pytest.mark.skipif(offline_available() is not None, reason="offline extra missing")


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + 960] for i in range(0, len(pcm) - 959, 960)]


def test_webrtc_vad_hears_speech_and_not_silence() -> None:
    from bot.localrt.offline import PiperVoice, WebRtcVad

    speech = asyncio.run(PiperVoice().synthesize("Where is my order four four one seven?", "joe"))
    vad = WebRtcVad()
    decisions = [vad(frame, 0.5) for frame in frames(speech)]
    assert sum(decisions) / len(decisions) > 0.5  # most of a spoken sentence is speech
    quiet = WebRtcVad()
    assert not any(quiet(frame, 0.5) for frame in frames(bytes(48000)))


def test_espeak_is_a_usable_light_voice() -> None:
    from bot.localrt.offline import EspeakVoice, WhisperTranscriber

    speech = asyncio.run(EspeakVoice().synthesize("Your order 4417 arrives on Friday.", "x"))
    assert 1.5 < len(speech) / 48000 < 5  # seconds of 24 kHz PCM16
    heard = asyncio.run(WhisperTranscriber().transcribe(speech)).lower().replace(",", "")
    assert "order" in heard and "friday" in heard  # robotic, but understood


def test_local_tts_setting_picks_the_voice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.config import Settings
    from bot.localrt.offline import EspeakVoice
    from bot.web import offline_providers

    settings = Settings.from_env({"LOCAL_TTS": "espeak", "BOT_DATA_DIR": str(tmp_path)})
    assert isinstance(offline_providers(settings).tts, EspeakVoice)
