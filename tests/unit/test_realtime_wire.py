"""The Realtime wire in both dialects, for both roles, from one model of the protocol."""

from __future__ import annotations

import base64
import json

import pytest

from bot.core.realtime import events as rt
from bot.core.realtime.client import decode_server_event, encode_client_event
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.server import ClientEventError, decode_client_event, encode_server_event
from bot.errors import RealtimeProtocolError

CONFIG = rt.SessionConfig(
    instructions="Be brief.",
    voice="marin",
    input_format=rt.AudioFormat.PCM16,
    output_format=rt.AudioFormat.PCM16,
    turn_detection=rt.TurnDetection(),
    transcription=rt.Transcription("gpt-4o-mini-transcribe"),
    speak=True,
)


def client_json(event: rt.ClientEvent, dialect: Dialect = Dialect.GA) -> dict[str, object]:
    return json.loads(encode_client_event(event, dialect))


def test_ga_session_update_nests_audio_settings() -> None:
    update = client_json(rt.SessionUpdate(CONFIG))
    session = update["session"]
    assert isinstance(session, dict)
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
    assert "tools" not in session  # none set


def test_beta_session_update_is_flat() -> None:
    config = rt.SessionConfig(
        "Hi",
        "alloy",
        rt.AudioFormat.G711_ULAW,
        rt.AudioFormat.G711_ULAW,
        rt.TurnDetection(),
        rt.Transcription("whisper-1"),
        speak=True,
    )
    session = client_json(rt.SessionUpdate(config), Dialect.BETA)["session"]
    assert isinstance(session, dict)
    assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
    assert session["modalities"] == ["text", "audio"]
    assert session["voice"] == "alloy"
    assert session["input_audio_transcription"] == {"model": "whisper-1"}
    assert session["turn_detection"]["type"] == "server_vad"
    assert "audio" not in session and "type" not in session


def test_ga_g711_format_and_no_transcription() -> None:
    config = rt.SessionConfig(input_format=rt.AudioFormat.G711_ULAW)
    audio = client_json(rt.SessionUpdate(config))["session"]["audio"]  # type: ignore[index]
    assert audio["input"] == {"format": {"type": "audio/pcmu"}}


def test_an_update_of_the_instructions_alone() -> None:
    update = rt.SessionUpdate(rt.SessionConfig(instructions="Be brief with Dana."))
    assert client_json(update)["session"] == {
        "type": "realtime",
        "instructions": "Be brief with Dana.",
    }
    assert client_json(update, Dialect.BETA)["session"] == {"instructions": "Be brief with Dana."}


def test_client_events() -> None:
    assert client_json(rt.AppendAudio(b"\0\0\0")) == {
        "type": "input_audio_buffer.append",
        "audio": "AAAA",
    }
    assert client_json(rt.TruncateItem("item_1", 1500)) == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    assert client_json(rt.CreateResponse("Say hi")) == {
        "type": "response.create",
        "response": {"instructions": "Say hi"},
    }
    output = rt.Item(None, "function_call_output", call_id="c1", output="{}")
    assert client_json(rt.CreateItem(output)) == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c1", "output": "{}"},
    }


CLIENT_EVENTS = [
    rt.SessionUpdate(CONFIG),
    rt.SessionUpdate(rt.SessionConfig(instructions="Only this.")),
    rt.AppendAudio(bytes(range(256))),
    rt.CommitAudio(),
    rt.ClearAudio(event_id="evt_7"),
    rt.CreateItem(rt.Item(None, "message", role="user", text="Where is my order?")),
    rt.CreateItem(rt.Item(None, "message", role="assistant", text="It shipped.")),
    rt.CreateItem(rt.Item(None, "function_call_output", call_id="c1", output='{"ok": 1}')),
    rt.CreateItem(rt.Item(None, "function_call", call_id="c2", name="end_call", arguments="{}")),
    rt.DeleteItem("item_3"),
    rt.TruncateItem("item_4", 1234),
    rt.CreateResponse(),
    rt.CreateResponse("Greet the caller."),
    rt.CancelResponse(),
]


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: type(e).__name__)
def test_what_a_client_writes_a_server_reads_back(event: rt.ClientEvent, dialect: Dialect) -> None:
    assert decode_client_event(encode_client_event(event, dialect)) == event


SERVER_EVENTS = [
    rt.AudioDelta("resp_1", "item_1", bytes(range(200))),
    rt.AudioDone("resp_1", "item_1"),
    rt.TranscriptDelta("resp_1", "item_1", "Hello "),
    rt.TranscriptDone("resp_1", "item_1", "Hello there."),
    rt.SpeechStarted(1200, "item_2"),
    rt.SpeechStopped(2900, "item_2"),
    rt.InputTranscriptCompleted("item_2", "Where is my order?"),
    rt.InputTranscriptFailed("item_2", "model crashed", "transcription_failed"),
    rt.ResponseCreated(rt.ResponseInfo("resp_1", "in_progress")),
    rt.ResponseDone(rt.ResponseInfo("resp_1", "cancelled", "turn_detected", {"total_tokens": 42})),
    rt.OutputItemAdded("resp_1", 0, rt.Item("item_1", "message", role="assistant")),
    rt.FunctionCallArguments("resp_1", "item_5", "call_1", "end_call", '{"reason": "bye"}'),
    rt.ItemTruncated("item_1", 800),
    rt.ErrorEvent("invalid_value", "bad", "invalid_request_error", None, "evt_1"),
]


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: type(e).__name__)
def test_what_a_server_writes_a_client_reads_back(event: rt.ServerEvent, dialect: Dialect) -> None:
    text = encode_server_event(event, dialect, "event_1")
    assert text is not None
    assert decode_server_event(text) == event


@pytest.mark.parametrize("prefix", ["response.output_audio", "response.audio"])
def test_audio_events_are_read_in_both_spellings(prefix: str) -> None:
    delta = decode_server_event(
        json.dumps({"type": f"{prefix}.delta", "response_id": "r", "item_id": "i", "delta": "AA=="})
    )
    assert delta == rt.AudioDelta("r", "i", b"\0")
    done = decode_server_event(
        json.dumps({"type": f"{prefix}.done", "response_id": "r", "item_id": "i"})
    )
    assert done == rt.AudioDone("r", "i")


@pytest.mark.parametrize(
    "name", ["response.output_audio_transcript.done", "response.audio_transcript.done"]
)
def test_transcripts_are_read_in_both_spellings(name: str) -> None:
    event = decode_server_event(json.dumps({"type": name, "item_id": "i", "transcript": "Hello"}))
    assert event == rt.TranscriptDone("", "i", "Hello")


def test_events_a_client_does_not_act_on_are_skipped() -> None:
    assert decode_server_event('{"type":"rate_limits.updated","rate_limits":[]}') is None
    assert decode_server_event('{"type":"conversation.item.added","item":{}}') is None


@pytest.mark.parametrize(
    "frame",
    [
        "nope",
        "[]",
        '{"no":"type"}',
        '{"type":"response.output_audio.delta","delta":1}',
        '{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"**"}',
    ],
)
def test_malformed_server_events_raise(frame: str) -> None:
    with pytest.raises(RealtimeProtocolError):
        decode_server_event(frame)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('{"no": "type"}', "invalid_event"),
        ('{"type": "response.teleport"}', "invalid_event"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_value"),
        ('{"type": "session.update", "session": {"input_audio_format": "mp3"}}', "invalid_value"),
        ('{"type": "conversation.item.create", "item": {"type": "teleport"}}', "invalid_value"),
        ('{"type": "conversation.item.truncate", "item_id": "i"}', "invalid_value"),
    ],
)
def test_bad_client_events_are_errors_with_a_code(frame: str, code: str) -> None:
    with pytest.raises(ClientEventError) as caught:
        decode_client_event(frame)
    assert caught.value.code == code


def test_item_done_exists_only_in_ga() -> None:
    item = rt.Item("i", "message", role="user", text="hi")
    assert encode_server_event(rt.ItemDone(item, None), Dialect.BETA, "e") is None
    ga = json.loads(encode_server_event(rt.ItemDone(item, None), Dialect.GA, "e") or "{}")
    assert ga["type"] == "conversation.item.done"
    added = json.loads(encode_server_event(rt.ItemAdded(item, None), Dialect.BETA, "e") or "{}")
    assert added["type"] == "conversation.item.created"


def test_audio_travels_as_base64_only_on_the_wire() -> None:
    text = encode_server_event(rt.AudioDelta("r", "i", b"\x01\x02"), Dialect.GA, "e")
    assert text is not None and json.loads(text)["delta"] == base64.b64encode(b"\x01\x02").decode()


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
def test_turn_detection_and_noise_reduction_reach_the_provider_as_the_sdk_types_them(
    dialect: Dialect,
) -> None:
    """Validated against the openai SDK's own client event models, in both dialects."""
    from openai.types.beta.realtime.response_create_event import ResponseCreateEvent as BetaCreate
    from openai.types.beta.realtime.session_update_event import SessionUpdateEvent as BetaUpdate
    from openai.types.realtime.response_create_event import ResponseCreateEvent as GaCreate
    from openai.types.realtime.session_update_event import SessionUpdateEvent as GaUpdate

    update_model, create_model = (
        (GaUpdate, GaCreate) if dialect is Dialect.GA else (BetaUpdate, BetaCreate)
    )
    for eagerness in ("low", "medium", "high", "auto"):
        config = rt.SessionConfig(
            instructions="Be brief.",
            input_format=rt.AudioFormat.G711_ULAW,
            turn_detection=rt.TurnDetection(semantic=True, eagerness=eagerness),  # type: ignore[arg-type]
            noise_reduction="far_field",
        )
        update = client_json(rt.SessionUpdate(config), dialect)
        update_model.model_validate(update, strict=False)
        session = update["session"]
        assert isinstance(session, dict)
        if dialect is Dialect.GA:
            vad = session["audio"]["input"]["turn_detection"]
            noise = session["audio"]["input"]["noise_reduction"]
        else:
            vad, noise = session["turn_detection"], session["input_audio_noise_reduction"]
        assert vad == {
            "type": "semantic_vad",
            "eagerness": eagerness,
            "create_response": True,
            "interrupt_response": True,
        }
        assert noise == {"type": "far_field"}
    server = client_json(
        rt.SessionUpdate(
            rt.SessionConfig(turn_detection=rt.TurnDetection(), noise_reduction="off")
        ),
        dialect,
    )
    update_model.model_validate(server)
    session = server["session"]
    assert isinstance(session, dict)
    if dialect is Dialect.GA:
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert session["audio"]["input"]["noise_reduction"] is None
    else:
        assert session["turn_detection"]["type"] == "server_vad"
        assert session["input_audio_noise_reduction"] is None
    create_model.model_validate(client_json(rt.CreateResponse("Go on.", speak=True), dialect))


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
def test_a_server_reads_turn_detection_and_noise_reduction_back(dialect: Dialect) -> None:
    config = rt.SessionConfig(
        turn_detection=rt.TurnDetection(semantic=True, eagerness="low"),
        noise_reduction="near_field",
    )
    event = decode_client_event(encode_client_event(rt.SessionUpdate(config), dialect))
    assert isinstance(event, rt.SessionUpdate)
    assert event.session.turn_detection == rt.TurnDetection(semantic=True, eagerness="low")
    assert event.session.noise_reduction == "near_field"
