"""The embedded default, for real: no keys, offline Whisper and Piper, the demo agent, a call."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.codec import pcm16_to_ulaw, resample, ulaw_to_pcm16
from bot.localrt.demo_agent import DemoAgent
from bot.localrt.offline import PiperVoice, WhisperTranscriber, offline_available
from bot.localrt.providers import Providers
from bot.simulator import simulate
from tests.conftest import LOCAL_SECRET, run_app, stored_call
from tests.local_backend import RecordingChat

pytestmark = pytest.mark.skipif(
    offline_available() is not None, reason="the offline extra is not installed"
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("interruptions", ["instant", "confirm"])
async def test_an_offline_call_with_a_question_an_answer_and_a_barge_in(
    tmp_path: Path, interruptions: str
) -> None:
    """With `confirm` the local backend neither answers nor cancels by itself: the bridge
    pauses the greeting, confirms the interruption and asks for the answer."""
    voice = PiperVoice(varied=False)  # the same question, and the same answers, every run
    spoken = await voice.synthesize("Where is my order 4417?", "joe")
    question = pcm16_to_ulaw(resample(spoken.pcm16, spoken.rate_hz, 8000))
    # No keys: the default.
    settings = Settings.from_env({"BOT_DATA_DIR": str(tmp_path), "INTERRUPTIONS": interruptions})
    assert settings.realtime.local
    chat = RecordingChat(DemoAgent())
    providers = Providers(
        WhisperTranscriber(), chat, voice, transcription_prompt=DemoAgent.TRANSCRIPTION_PROMPT
    )
    async with run_app(settings, local_providers=providers) as app:
        # The caller talks over the greeting, 1.2 s in, and asks about an order.
        result = await simulate(
            app.url,
            auth_token=LOCAL_SECRET,
            barge_in_at_s=1.2,
            barge_in=question,
            duration_s=11,
        )
        await app.calls_done()
    assert len(result.clears) == 1  # the greeting was cut short
    call = await stored_call(settings, result.call_sid)
    greeting, question_turn, reply = [t for t in call["turns"] if t["text"]][:3]
    assert greeting["speaker"] == "assistant" and greeting["interrupted"]
    assert question_turn["speaker"] == "caller"
    assert "4417" in question_turn["text"].replace(",", "")  # Whisper, primed for digits
    # The order tool ran and its answer was spoken: none of the demo agent's other
    # replies ("What is your order number?", "I am a demo agent…") says "shipped".
    [tool] = [e for e in call["events"] if e["kind"] == "tool"]
    assert tool["data"]["name"] == "get_order_status" and '"found": true' in tool["data"]["result"]
    assert reply["speaker"] == "assistant"
    assert reply["text"] == "Order 4417 is shipped. It should arrive Friday."
    assert reply["started_ms"] > question_turn["ended_ms"]
    # What the phone heard is that answer. Whisper tiny.en on 8 kHz synthetic speech hears
    # "should arrive Friday" reliably; "shipped" and the digits less so ("a ship", "4,417").
    # From the answer on: on the whole 11 s, Whisper now and then stopped after the
    # greeting's fragment and the silence ("Hello, I am the demo.").
    answer = result.output_ulaw[max(0, reply["started_ms"] - 300) * 8 :]
    heard = await WhisperTranscriber().transcribe(ulaw_to_pcm16(answer), 8000, None)
    assert "arrive friday" in heard.lower()
    # The backend's own copy of the greeting was cut exactly where the call log says.
    after_barge_in = chat.calls[1]
    [said] = [m["content"] for m in after_barge_in if m["role"] == "assistant" and m["content"]]
    assert said == greeting["heard_text"]
    assert 0 < len(said) < len(greeting["text"])


@pytest.mark.timeout(120)
async def test_a_listened_call_transcribed_offline(tmp_path: Path) -> None:
    """`CALL_MODE=transcribe` on the embedded default: the local backend's transcription
    sessions (`intent=transcription`), real Whisper on Piper's speech, one per track."""
    voice = PiperVoice(varied=False)

    async def spoken(text: str) -> bytes:
        speech = await voice.synthesize(text, "joe")
        return pcm16_to_ulaw(resample(speech.pcm16, speech.rate_hz, 8000))

    silence = b"\xff" * 8000  # a second of μ-law silence
    caller_words = await spoken("Hello, I am calling about my invoice from March.")
    agent_words = await spoken("Sure, I can help you with that invoice today.")
    caller = silence[:4000] + caller_words
    agent = silence * 2 + len(caller_words) * b"\xff" + agent_words
    settings = Settings.from_env(
        {"BOT_DATA_DIR": str(tmp_path), "CALL_MODE": "transcribe", "FORWARD_TO": "+15550009999"}
    )
    assert settings.realtime.local
    providers = Providers(WhisperTranscriber(), DemoAgent(), voice)
    async with run_app(settings, local_providers=providers) as app:
        result = await simulate(
            app.url,
            auth_token=LOCAL_SECRET,
            say=caller,
            agent=agent,
            duration_s=len(agent) / 8000 + 1.5,
        )
        await app.calls_done()
    assert result.forked and result.media_received == 0
    call = await stored_call(settings, result.call_sid)
    turns = [(t["speaker"], t["text"].lower()) for t in call["turns"]]
    assert [speaker for speaker, _ in turns] == ["caller", "agent"], turns
    assert "invoice" in turns[0][1] and "march" in turns[0][1]
    assert "help" in turns[1][1] and "invoice" in turns[1][1]
    assert call["turns"][0]["started_ms"] < call["turns"][1]["started_ms"]
