from __future__ import annotations

import json

import pytest

from bot.errors import RealtimeProtocolError
from bot.sansio import realtime as rt

CONFIG = rt.SessionConfig(
    instructions="Be brief.",
    voice="marin",
    audio=rt.AudioFormat.PCM16,
    transcription_model="gpt-4o-mini-transcribe",
)


def test_ga_session_update_nests_audio_settings() -> None:
    update = json.loads(rt.session_update(CONFIG, rt.Dialect.GA))
    session = update["session"]
    assert update["type"] == "session.update"
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
    }
    vad = session["audio"]["input"]["turn_detection"]
    assert vad["type"] == "server_vad" and vad["interrupt_response"] is True
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert "input_audio_format" not in session and "modalities" not in session


def test_beta_session_update_is_flat() -> None:
    config = rt.SessionConfig("Hi", "alloy", rt.AudioFormat.G711_ULAW, "whisper-1")
    session = json.loads(rt.session_update(config, rt.Dialect.BETA))["session"]
    assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
    assert session["modalities"] == ["text", "audio"]
    assert session["voice"] == "alloy"
    assert session["input_audio_transcription"] == {"model": "whisper-1"}
    assert session["turn_detection"]["type"] == "server_vad"
    assert "audio" not in session and "type" not in session


def test_ga_g711_format_and_no_transcription() -> None:
    config = rt.SessionConfig("Hi", "cedar", rt.AudioFormat.G711_ULAW, None)
    audio = json.loads(rt.session_update(config, rt.Dialect.GA))["session"]["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcmu"}
    assert "transcription" not in audio["input"]


def test_client_events() -> None:
    assert json.loads(rt.append_audio("AAAA")) == {
        "type": "input_audio_buffer.append",
        "audio": "AAAA",
    }
    assert json.loads(rt.truncate("item_1", 1500)) == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    assert json.loads(rt.create_response("Say hi")) == {
        "type": "response.create",
        "response": {"instructions": "Say hi"},
    }


@pytest.mark.parametrize("prefix", ["response.output_audio", "response.audio"])
def test_audio_events_parse_in_both_spellings(prefix: str) -> None:
    delta = rt.parse(
        json.dumps({"type": f"{prefix}.delta", "response_id": "r", "item_id": "i", "delta": "AA=="})
    )
    assert delta == rt.RealtimeAudioDelta("r", "i", "AA==")
    done = rt.parse(json.dumps({"type": f"{prefix}.done", "response_id": "r", "item_id": "i"}))
    assert done == rt.RealtimeAudioDone("r", "i")


@pytest.mark.parametrize(
    "name", ["response.output_audio_transcript.done", "response.audio_transcript.done"]
)
def test_transcripts_parse_in_both_spellings(name: str) -> None:
    event = rt.parse(json.dumps({"type": name, "item_id": "i", "transcript": "Hello"}))
    assert event == rt.RealtimeTranscriptDone("i", "Hello")


def test_other_server_events() -> None:
    assert rt.parse(
        '{"type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"u1"}'
    ) == rt.RealtimeSpeechStarted(1000, "u1")
    done = rt.parse(
        json.dumps(
            {
                "type": "response.done",
                "response": {
                    "id": "r1",
                    "status": "cancelled",
                    "status_details": {"type": "cancelled", "reason": "turn_detected"},
                    "usage": {"total_tokens": 42},
                },
            }
        )
    )
    assert done == rt.RealtimeResponseDone("r1", "cancelled", "turn_detected", {"total_tokens": 42})
    error = rt.parse(
        '{"type":"error","error":{"type":"invalid_request_error","code":"x","message":"m"}}'
    )
    assert error == rt.RealtimeError("x", "m", "invalid_request_error")
    ga = rt.parse('{"type":"session.created","session":{"type":"realtime","id":"s","audio":{}}}')
    beta = rt.parse('{"type":"session.created","session":{"id":"s","input_audio_format":"pcm16"}}')
    assert isinstance(ga, rt.RealtimeSessionCreated) and ga.dialect is rt.Dialect.GA
    assert isinstance(beta, rt.RealtimeSessionCreated) and beta.dialect is rt.Dialect.BETA
    assert rt.parse('{"type":"rate_limits.updated","rate_limits":[]}') is None


@pytest.mark.parametrize(
    "frame",
    ["nope", "[]", '{"no":"type"}', '{"type":"response.output_audio.delta","delta":1}'],
)
def test_malformed_server_events_raise(frame: str) -> None:
    with pytest.raises(RealtimeProtocolError):
        rt.parse(frame)
