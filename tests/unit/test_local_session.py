"""The local backend's session core, every event it emits checked against the openai SDK's
types in both dialects, as the `/v1/realtime` route would send it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bot.core.codec import pcm16_to_ulaw
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import AudioFormat
from bot.core.realtime.server import ClientEventError, decode_client_event, encode_server_event
from bot.localrt.core.endpointing import sounds_finished
from bot.localrt.core.session import (
    Cancel,
    Emit,
    Generate,
    Output,
    ProbeTurn,
    RealtimeServerSession,
    Synthesize,
    Transcribe,
)
from bot.localrt.providers import Speech
from bot.localrt.runner import in_format
from tests.audio_tools import tone
from tests.realtime_types import MODELS, BetaEvent


class Session(RealtimeServerSession):
    """The core, with the dialect its events are checked in."""

    dialect: str


def events(outputs: list[Output], dialect: str) -> list[dict[str, Any]]:
    """The emitted events as the dialect spells them, each validated by the SDK's model."""
    found = []
    for output in outputs:
        if not isinstance(output, Emit):
            continue
        text = encode_server_event(output.event, Dialect(dialect), "event_test")
        if text is None:
            continue  # not in this dialect
        event = json.loads(text)
        model = MODELS[dialect].get(event["type"])
        assert model is not None, f"{dialect} SDK has no server event {event['type']!r}"
        model.model_validate(event)
        found.append(event)
    return found


def types(outputs: list[Output], dialect: str) -> list[str]:
    return [e["type"] for e in events(outputs, dialect)]


def send(session: Session, event: dict[str, Any] | str) -> list[Output]:
    """A client event as JSON, handled as the `/v1/realtime` route does."""
    try:
        decoded = decode_client_event(event if isinstance(event, str) else json.dumps(event))
    except ClientEventError as exc:
        return [Emit(exc.as_event())]
    return session.receive(decoded)


def append(session: Session, pcm: bytes) -> list[Output]:
    return send(
        session, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


@pytest.fixture(params=["ga", "beta"])
def session(request: pytest.FixtureRequest) -> Session:
    if request.param == "beta" and BetaEvent is None:
        pytest.skip("this openai SDK has no beta types")
    core = Session("sess_test0001", "local-pipeline")
    core.dialect = request.param
    return core


def test_session_lifecycle_in_both_dialects(session: Session) -> None:
    d = session.dialect
    assert types(session.open(), d) == ["session.created"]
    if d == "ga":
        update = {
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"voice": "joe", "format": {"type": "audio/pcmu"}},
            },
        }
    else:
        update = {
            "instructions": "Be brief.",
            "voice": "joe",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
        }
    [updated] = events(send(session, {"type": "session.update", "session": update}), d)
    assert updated["type"] == "session.updated"
    assert session.config.input_format is session.config.output_format
    assert session.config.output_format is not None
    assert session.config.output_format.value == "g711_ulaw"
    assert (session.config.voice, session.config.instructions) == ("joe", "Be brief.")


def test_a_text_turn_and_a_spoken_answer(session: Session) -> None:
    d = session.dialect
    session.open()
    created = send(
        session,
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Where is order 4417?"}],
            },
        },
    )
    assert types(created, d) == (
        ["conversation.item.added", "conversation.item.done"]
        if d == "ga"
        else ["conversation.item.created"]
    )
    started = send(session, {"type": "response.create"})
    assert types(started, d) == ["response.created"]
    [generate] = [o for o in started if isinstance(o, Generate)]
    assert generate.messages == [{"role": "user", "content": "Where is order 4417?"}]
    response_id = generate.response_id
    assert session.generated_text(response_id, "It shipped yesterday. It arrives") == [
        Synthesize(response_id, 0, "It shipped yesterday.", session.config.voice)
    ]
    assert session.generated_text(response_id, " on Friday.") == []  # not a whole sentence yet
    spoken = session.synthesized(response_id, 0, "It shipped yesterday.", tone(300, 1.0, 24000))
    delta = "response.output_audio.delta" if d == "ga" else "response.audio.delta"
    assert types(spoken, d)[:2] == ["response.output_item.added", "response.content_part.added"]
    assert types(spoken, d).count(delta) == 10
    [last] = session.generation_done(
        response_id, {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}
    )
    assert last == Synthesize(response_id, 1, "It arrives on Friday.", session.config.voice)
    finished = types(session.synthesized(response_id, 1, last.text, tone(300, 0.5, 24000)), d)
    assert finished[-1] == "response.done"
    done = events(session.synthesized(response_id, 1, "x", b""), d)
    assert done == []  # a late result of a finished response is ignored
    [final] = [e for e in events(session.generated_text("resp_none", "x"), d)] or [None]
    assert final is None


def test_server_vad_turns_and_barge_in(session: Session) -> None:
    d = session.dialect
    session.open()
    outputs = append(session, bytes(24000 * 2 // 2)) + append(
        session, tone(400, 1.0, 24000, dbfs=-12)
    )
    outputs += append(session, bytes(int(0.6 * 24000) * 2))
    kinds = types(outputs, d)
    assert kinds[:1] == ["input_audio_buffer.speech_started"]
    assert "input_audio_buffer.speech_stopped" in kinds and "input_audio_buffer.committed" in kinds
    started = next(
        e for e in events(outputs, d) if e["type"] == "input_audio_buffer.speech_started"
    )
    stopped = next(
        e for e in events(outputs, d) if e["type"] == "input_audio_buffer.speech_stopped"
    )
    assert started["audio_start_ms"] == pytest.approx(500 - 300, abs=40)  # with prefix padding
    assert stopped["audio_end_ms"] == pytest.approx(1500, abs=40)
    [transcribe] = [o for o in outputs if isinstance(o, Transcribe)]
    assert transcribe.rate_hz == 24000
    assert len(transcribe.pcm16) // 48 == pytest.approx(1300 + 500, abs=60)
    assert "response.created" in kinds  # create_response...
    assert not [o for o in outputs if isinstance(o, Generate)]  # ...but the model waits
    heard = session.transcribed(transcribe.item_id, " Hello? ")
    [generate] = [o for o in heard if isinstance(o, Generate)]
    assert generate.messages == [{"role": "user", "content": "Hello?"}]
    assert types(heard, d) == ["conversation.item.input_audio_transcription.completed"]
    session.generated_text(generate.response_id, "One. ")
    session.synthesized(generate.response_id, 0, "One.", tone(300, 0.3, 24000))
    # The caller speaks over the answer.
    interrupted = append(session, tone(400, 0.2, 24000, dbfs=-12))
    assert Cancel(generate.response_id) in interrupted
    done = events(interrupted, d)[-1]
    assert done["type"] == "response.done"
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"


def test_truncation_keeps_only_what_was_heard(session: Session) -> None:
    d = session.dialect
    session.open()
    send(
        session,
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tell me."}],
            },
        },
    )
    response_id = next(
        o for o in send(session, {"type": "response.create"}) if isinstance(o, Generate)
    ).response_id
    session.generated_text(response_id, "First part here. Second part has four words. ")
    session.synthesized(response_id, 0, "First part here.", tone(300, 1.0, 24000))
    session.synthesized(response_id, 1, "Second part has four words.", tone(300, 1.0, 24000))
    session.generation_done(response_id, {})
    item_id = session.conversation.items[-1].id
    [truncated] = events(
        send(
            session,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1500,
            },
        ),
        d,
    )
    assert truncated["type"] == "conversation.item.truncated"
    [too_long] = events(
        send(
            session,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 5000,
            },
        ),
        d,
    )
    assert too_long["type"] == "error"
    next_turn = next(
        o for o in send(session, {"type": "response.create"}) if isinstance(o, Generate)
    )
    assert next_turn.messages[-1] == {
        "role": "assistant",
        "content": "First part here. Second part",
    }


def test_function_calls_and_their_output(session: Session) -> None:
    d = session.dialect
    session.open()
    response_id = next(
        o for o in send(session, {"type": "response.create"}) if isinstance(o, Generate)
    ).response_id
    kinds = types(
        session.function_call(response_id, "call_1", "get_order_status", '{"order_id": "4417"}'), d
    )
    assert kinds == [
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert types(session.generation_done(response_id, {}), d)[-1] == "response.done"
    send(
        session,
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"status": "shipped"}',
            },
        },
    )
    generate = next(
        o for o in send(session, {"type": "response.create"}) if isinstance(o, Generate)
    )
    assert generate.messages[-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order_status", "arguments": '{"order_id": "4417"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('{"no": "type"}', "invalid_event"),
        ('{"type": "response.teleport"}', "invalid_event"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "AAAA"}', "invalid_value"),  # 3 bytes
        ('{"type": "session.update", "session": {"input_audio_format": "mp3"}}', "invalid_value"),
        ('{"type": "response.cancel"}', "response_cancel_not_active"),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
    ],
)
def test_bad_input_gets_an_error_event_and_the_session_goes_on(
    session: Session, frame: str, code: str
) -> None:
    d = session.dialect
    session.open()
    [error] = events(send(session, frame), d)
    assert error["type"] == "error" and error["error"]["code"] == code
    assert types(send(session, {"type": "response.create"}), d)[0] == "response.created"


def test_a_failed_transcription_lets_the_waiting_response_go_ahead(
    session: Session,
) -> None:
    d = session.dialect
    session.open()
    outputs = append(session, tone(400, 0.5, 24000, dbfs=-12)) + append(
        session, bytes(int(0.6 * 24000) * 2)
    )
    [transcribe] = [o for o in outputs if isinstance(o, Transcribe)]
    failed = session.transcription_failed(transcribe.item_id, "model crashed")
    assert types(failed, d) == ["conversation.item.input_audio_transcription.failed"]
    assert [o for o in failed if isinstance(o, Generate)]


def test_a_tool_call_only_response_has_no_message_item(session: Session) -> None:
    d = session.dialect
    session.open()
    response_id = next(
        o for o in send(session, {"type": "response.create"}) if isinstance(o, Generate)
    ).response_id
    session.function_call(response_id, "call_1", "end_call", "{}")
    [done] = events(session.generation_done(response_id, {}), d)
    assert [item["type"] for item in done["response"]["output"]] == ["function_call"]


def test_g711_ulaw_audio_in_and_out(session: Session) -> None:
    d = session.dialect
    session.open()
    update = (
        {
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        }
        if d == "ga"
        else {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}
    )
    send(session, {"type": "session.update", "session": update})
    spoken = pcm16_to_ulaw(tone(400, 0.5, 8000, dbfs=-12)) + b"\xff" * 4800
    outputs = append(session, spoken)
    assert types(outputs, d)[0] == "input_audio_buffer.speech_started"
    [transcribe] = [o for o in outputs if isinstance(o, Transcribe)]
    assert transcribe.rate_hz == 8000  # μ-law is kept at its own rate: no resampling
    assert len(transcribe.pcm16) // 16 == pytest.approx(500 + 500, abs=60)
    [generate] = [
        o for o in session.transcribed(transcribe.item_id, "hi") if isinstance(o, Generate)
    ]
    session.generated_text(generate.response_id, "Hello. ")
    speech = pcm16_to_ulaw(tone(300, 0.3, 8000))  # the runner makes it the output format
    audio_events = [
        e
        for e in events(session.synthesized(generate.response_id, 0, "Hello.", speech), d)
        if e["type"].endswith("audio.delta")
    ]
    ulaw = b"".join(base64.b64decode(e["delta"]) for e in audio_events)
    assert ulaw == speech and len(audio_events) == 3  # 100 ms a delta


@pytest.mark.parametrize(
    ("audio", "size"), [(AudioFormat.G711_ULAW, 8000), (AudioFormat.PCM16, 2 * 24000)]
)
def test_speech_is_resampled_once_a_sentence_into_the_output_format(
    audio: AudioFormat, size: int
) -> None:
    piper = Speech(tone(440, 1.0, 22050), 22050)
    assert len(in_format(piper, audio)) == size


def semantic(session: Session, eagerness: str = "medium") -> None:
    session.open()
    send(
        session,
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "semantic_vad", "eagerness": eagerness}}
                },
            }
            if session.dialect == "ga"
            else {"turn_detection": {"type": "semantic_vad", "eagerness": eagerness}},
        },
    )


def speak_then_pause(session: Session, pause_s: float) -> list[Output]:
    outputs = append(session, bytes(24000)) + append(session, tone(400, 1.0, 24000, dbfs=-12))
    return outputs + append(session, bytes(int(pause_s * 24000) * 2))


def test_semantic_vad_ends_a_finished_turn_at_a_short_pause(session: Session) -> None:
    """At 200 ms of quiet the turn so far is transcribed; finished words end it at once and
    are its transcript: no second transcription, and the answer starts."""
    semantic(session)
    outputs = speak_then_pause(session, 0.3)
    assert "input_audio_buffer.speech_stopped" not in types(outputs, session.dialect)
    [probe] = [o for o in outputs if isinstance(o, ProbeTurn)]
    assert len(probe.pcm16) // 48 == pytest.approx(300 + 1000 + 200, abs=60)
    ended = session.turn_probed(probe.probe_id, " What time do you close? ")
    kinds = types(ended, session.dialect)
    assert kinds[:2] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    assert "conversation.item.input_audio_transcription.completed" in kinds
    stopped = events(ended, session.dialect)[0]
    assert stopped["audio_end_ms"] == pytest.approx(1500, abs=40)
    assert not [o for o in ended if isinstance(o, Transcribe)]
    [generate] = [o for o in ended if isinstance(o, Generate)]
    assert generate.messages == [{"role": "user", "content": "What time do you close?"}]


@pytest.mark.parametrize(("eagerness", "wait_s"), [("high", 2.0), ("medium", 4.0)])
def test_semantic_vad_waits_for_an_unfinished_turn(
    session: Session, eagerness: str, wait_s: float
) -> None:
    semantic(session, eagerness)
    outputs = speak_then_pause(session, 0.3)
    [probe] = [o for o in outputs if isinstance(o, ProbeTurn)]
    assert session.turn_probed(probe.probe_id, "I'd like to order a") == []
    later = append(session, bytes(int((wait_s - 0.4) * 24000) * 2))
    assert "input_audio_buffer.speech_stopped" not in types(later, session.dialect)
    # More speech: a new pause gets its own probe; the old probe's answer changes nothing.
    more = append(session, tone(400, 0.5, 24000, dbfs=-12)) + append(session, bytes(9600))
    assert session.turn_probed(probe.probe_id, "Fine.") == []
    [second] = [o for o in more if isinstance(o, ProbeTurn)]
    assert second.probe_id != probe.probe_id
    session.turn_probed(second.probe_id, "a large pizza and")
    ended = append(session, bytes(int(wait_s * 24000) * 2))
    assert "input_audio_buffer.speech_stopped" in types(ended, session.dialect)
    assert [o for o in ended if isinstance(o, Transcribe)]  # its words are transcribed whole


def test_semantic_vad_gives_a_sound_without_words_the_fixed_wait(session: Session) -> None:
    semantic(session)
    [probe] = [o for o in speak_then_pause(session, 0.3) if isinstance(o, ProbeTurn)]
    assert session.turn_probed(probe.probe_id, "") == []
    ended = append(session, bytes(int(0.3 * 24000) * 2))  # 600 ms of quiet in all: > 500
    assert "input_audio_buffer.speech_stopped" in types(ended, session.dialect)


def test_what_sounds_finished() -> None:
    assert sounds_finished("What time do you close?") is True
    assert sounds_finished("My order number is 4417.") is True
    assert sounds_finished("Is that all I have to do?") is True
    assert sounds_finished("I'd like to order a") is False
    assert sounds_finished("I called because") is False
    assert sounds_finished("So, um,") is False
    assert sounds_finished("Let me think...") is False
    assert sounds_finished("  ") is None


def test_a_transcription_session_transcribes_and_never_answers(session: Session) -> None:
    """`intent=transcription`: GA `session.update` with `type: transcription`, or beta
    `transcription_session.update`; its events are the SDK's, and no response is made."""
    d = session.dialect
    session.open()
    if d == "ga":
        update: dict[str, Any] = {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad"},
                    }
                },
            },
        }
    else:
        update = {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {"type": "server_vad"},
            },
        }
    [updated] = events(send(session, update), d)
    assert updated["type"] == ("session.updated" if d == "ga" else "transcription_session.updated")
    speech = pcm16_to_ulaw(tone(400, 1.0, 8000, dbfs=-12))
    outputs = append(session, b"\xff" * 4000) + append(session, speech)
    outputs += append(session, b"\xff" * 8000)
    kinds = types(outputs, d)
    assert "input_audio_buffer.committed" in kinds and "response.created" not in kinds
    [job] = [o for o in outputs if isinstance(o, Transcribe)]
    done = events(session.transcribed(job.item_id, "Hello there."), d)
    assert [e["type"] for e in done] == ["conversation.item.input_audio_transcription.completed"]
    refused = events(send(session, {"type": "response.create"}), d)
    assert refused[0]["type"] == "error"
