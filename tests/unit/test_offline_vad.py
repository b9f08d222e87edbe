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
