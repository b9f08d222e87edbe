"""The call session driven with bare events, no sockets (h11 style)."""

from __future__ import annotations

import base64
import json

from bot.sansio import realtime as rt
from bot.sansio import twilio as tw
from bot.sansio.session import (
    CallSession,
    CallState,
    DigitPressed,
    EndCall,
    HangUp,
    Interrupted,
    LeaveVoicemail,
    Notice,
    PlayedAudio,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    Transfer,
    TurnRecord,
    cut_heard_text,
)
from tests.audio_tools import tone

SID = "MZ" + "0" * 32
CALL = "CA" + "0" * 32


def pcm_session(**kw: object) -> CallSession:
    return CallSession(SID, CALL, rt.AudioFormat.PCM16, **kw)  # type: ignore[arg-type]


def delta(item: str, audio: bytes, response: str = "resp_1") -> rt.RealtimeAudioDelta:
    return rt.RealtimeAudioDelta(response, item, base64.b64encode(audio).decode())


def to_twilio(commands: list) -> list[dict]:
    return [json.loads(c.text) for c in commands if isinstance(c, SendToTwilio)]


def to_realtime(commands: list) -> list[dict]:
    return [json.loads(c.text) for c in commands if isinstance(c, SendToRealtime)]


def marks(messages: list[dict]) -> list[str]:
    return [m["mark"]["name"] for m in messages if m["event"] == "mark"]


def test_caller_audio_is_transcoded_to_24k_and_appended() -> None:
    session = pcm_session()
    commands = session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 0))
    [append] = to_realtime(commands)
    assert append["type"] == "input_audio_buffer.append"
    assert len(base64.b64decode(append["audio"])) == 960  # 20 ms of 24 kHz PCM16


def test_model_audio_goes_out_in_20_ms_chunks_each_followed_by_a_mark() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.105, 24000))))
    assert len(marks(sent)) == 5
    media = [m for m in sent if m["event"] == "media"]
    assert [m["event"] for m in sent] == ["media", "mark"] * len(media)
    assert {len(base64.b64decode(m["media"]["payload"])) for m in media} == {160}
    assert all(m["streamSid"] == SID for m in sent)
    # The partial last chunk (5 ms) goes out when the audio is done.
    tail = to_twilio(session.handle_realtime(rt.RealtimeAudioDone("resp_1", "item_1")))
    assert [m["event"] for m in tail] == ["media", "mark"]
    assert 0 < len(base64.b64decode(tail[0]["media"]["payload"])) < 160
    assert len(set(marks(sent + tail))) == len(marks(sent + tail))


def test_barge_in_clears_twilio_and_truncates_at_the_heard_position() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 1.0, 24000))))
    names = marks(sent)
    assert len(names) == 50  # 1 s of audio, 20 ms per chunk
    for name in names[:10]:  # Twilio played 200 ms
        session.handle_twilio(tw.TwilioMark(name))
    commands = session.handle_realtime(rt.RealtimeSpeechStarted(5000, "user_1"))
    assert to_twilio(commands) == [{"event": "clear", "streamSid": SID}]
    assert to_realtime(commands) == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_1",
            "content_index": 0,
            "audio_end_ms": 200,
        }
    ]
    [interrupted] = [c for c in commands if isinstance(c, Interrupted)]
    assert interrupted == Interrupted("item_1", 200, 1000, cleared=True, at_ms=0)
    assert session.stats.clears == 1 and session.stats.interruptions == 1


def test_after_clear_echoed_marks_and_late_deltas_change_nothing() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    names = marks(to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.5, 24000)))))
    session.handle_twilio(tw.TwilioMark(names[0]))
    session.handle_realtime(rt.RealtimeSpeechStarted(100, "user_1"))
    # Twilio sends back every flushed mark: none of them was played.
    for name in names[1:]:
        assert session.handle_twilio(tw.TwilioMark(name)) == []
    assert session.stats.marks_played == 1
    # The server was still streaming the interrupted answer.
    assert session.handle_realtime(delta("item_1", tone(500, 0.2, 24000))) == []
    assert session.stats.deltas_dropped == 1
    done = session.handle_realtime(
        rt.RealtimeResponseDone("resp_1", "cancelled", "turn_detected", None)
    )
    assert not [c for c in done if isinstance(c, Notice) and c.level == "warning"]
    # The next answer plays normally.
    session.handle_realtime(rt.RealtimeResponseCreated("resp_2"))
    fresh = to_twilio(session.handle_realtime(delta("item_2", tone(500, 0.1, 24000), "resp_2")))
    assert [m["event"] for m in fresh][:2] == ["media", "mark"]
    assert session.playing


def test_barge_in_after_playback_finished_does_nothing() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.2, 24000))))
    sent += to_twilio(session.handle_realtime(rt.RealtimeAudioDone("resp_1", "item_1")))
    session.handle_realtime(rt.RealtimeResponseDone("resp_1", "completed", None, None))
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    assert not session.playing
    commands = session.handle_realtime(rt.RealtimeSpeechStarted(9000, "user_2"))
    assert to_twilio(commands) == [] and to_realtime(commands) == []


def test_barge_in_while_generating_but_nothing_queued_truncates_without_clear() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.1, 24000))))
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    commands = session.handle_realtime(rt.RealtimeSpeechStarted(9000, "user_2"))
    assert to_twilio(commands) == []
    [truncate] = to_realtime(commands)
    assert truncate["audio_end_ms"] == 100  # all 5 chunks played; the response goes on
    assert session.handle_realtime(delta("item_1", tone(500, 0.1, 24000))) == []


def test_truncation_never_exceeds_audio_received() -> None:
    session = CallSession(SID, CALL, rt.AudioFormat.G711_ULAW)
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("item_1", b"\x7f" * 4000)))
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    [truncate] = to_realtime(session.handle_realtime(rt.RealtimeSpeechStarted(1, None)))
    assert truncate["audio_end_ms"] == 500 == 4000 // 8


def test_passthrough_forwards_payloads_untouched() -> None:
    session = CallSession(SID, CALL, rt.AudioFormat.G711_ULAW)
    inbound = base64.b64encode(bytes(range(160))).decode()
    [append] = to_realtime(
        session.handle_twilio(
            tw.parse(json.dumps({"event": "media", "media": {"payload": inbound}}))
        )
    )
    assert append["audio"] == inbound
    outbound = base64.b64encode(bytes(range(256)) * 3).decode()
    sent = to_twilio(session.handle_realtime(delta("item_1", base64.b64decode(outbound))))
    payloads = [m["media"]["payload"] for m in sent if m["event"] == "media"]
    assert "".join(payloads) == outbound
    assert all(len(base64.b64decode(p)) <= 162 for p in payloads)


def test_greeting_asks_the_model_to_speak_first() -> None:
    assert pcm_session().begin() == []
    [create] = to_realtime(pcm_session(greeting="Hello from Acme!").begin())
    assert create["type"] == "response.create"
    assert "Hello from Acme!" in create["response"]["instructions"]


def test_stop_ends_the_call_and_later_events_are_ignored() -> None:
    session = pcm_session()
    assert session.handle_twilio(tw.TwilioStop(CALL)) == [EndCall("caller", "caller hung up")]
    assert session.state is CallState.ENDED
    assert session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 0)) == []
    assert session.handle_realtime(delta("item_1", b"\0" * 960)) == []


def test_realtime_errors_fatal_quiet_and_ordinary() -> None:
    session = pcm_session()
    quiet = session.handle_realtime(rt.RealtimeError("response_cancel_not_active", "m", None))
    assert quiet == [Notice("debug", "realtime: response_cancel_not_active")]
    ordinary = session.handle_realtime(rt.RealtimeError("invalid_value", "bad", None))
    assert isinstance(ordinary[0], Notice) and ordinary[0].level == "warning"
    assert session.state is CallState.STREAMING
    fatal = session.handle_realtime(rt.RealtimeError("session_expired", "60 minutes", None))
    assert isinstance(fatal[0], EndCall) and fatal[0].by == "realtime"
    assert session.state is CallState.ENDED


def test_dtmf_is_reported() -> None:
    session = pcm_session()
    session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 2340))
    commands = session.handle_twilio(tw.TwilioDtmf("5"))
    assert commands[0] == DigitPressed("5", 2340)
    item, create = to_realtime(commands)
    assert item["item"]["content"] == [
        {"type": "input_text", "text": "[The caller pressed 5 on the phone keypad]"}
    ]
    assert create["type"] == "response.create"


def test_a_delta_with_invalid_base64_is_skipped() -> None:
    session = pcm_session()
    bad = rt.RealtimeAudioDelta("resp_1", "item_1", "***not base64***")
    [notice] = session.handle_realtime(bad)
    assert isinstance(notice, Notice) and notice.level == "warning"
    assert to_twilio(session.handle_realtime(delta("item_1", b"\0" * 960)))  # still works


def test_barge_in_resets_the_output_resampler() -> None:
    """After an interruption the next answer starts from a clean filter, as a fresh call would."""
    interrupted = pcm_session()
    interrupted.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    interrupted.handle_realtime(delta("item_1", tone(3000, 0.1, 24000, dbfs=-1)))
    interrupted.handle_realtime(rt.RealtimeSpeechStarted(100, None))
    interrupted.handle_realtime(
        rt.RealtimeResponseDone("resp_1", "cancelled", "turn_detected", None)
    )
    fresh = pcm_session()
    answer = tone(440, 0.1, 24000)
    for session in (interrupted, fresh):
        session.handle_realtime(rt.RealtimeResponseCreated("resp_2"))
    after = to_twilio(interrupted.handle_realtime(delta("item_2", answer, "resp_2")))
    clean = to_twilio(fresh.handle_realtime(delta("item_2", answer, "resp_2")))
    payloads = [
        [m["media"]["payload"] for m in sent if m["event"] == "media"] for sent in (after, clean)
    ]
    assert payloads[0] == payloads[1]


def at(session: CallSession, ms: int) -> None:
    """Advance the session clock the way Twilio does: with a media frame."""
    session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, ms))


def turns(commands: list) -> list[TurnRecord]:
    return [c for c in commands if isinstance(c, TurnRecord)]


def play_all(session: CallSession, sent: list[dict], from_ms: int) -> list:
    """Twilio plays every chunk, acknowledging each mark 20 ms after the previous one."""
    out: list = []
    for i, name in enumerate(marks(sent)):
        at(session, from_ms + 20 * (i + 1))
        out += session.handle_twilio(tw.TwilioMark(name))
    return out


def test_a_caller_turn_is_recorded_from_vad_and_transcription() -> None:
    session = pcm_session()
    [started] = turns(session.handle_realtime(rt.RealtimeSpeechStarted(1200, "u1")))
    assert started == TurnRecord("u1", "caller", 1200, None, None)
    [stopped] = turns(session.handle_realtime(rt.RealtimeSpeechStopped(2900, "u1")))
    assert stopped.ended_ms == 2900
    [done] = turns(session.handle_realtime(rt.RealtimeInputTranscript("u1", "Where is my order?")))
    assert done == TurnRecord("u1", "caller", 1200, 2900, "Where is my order?")


def test_an_answer_is_timed_by_marks_and_its_latency_runs_from_the_end_of_speech() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeSpeechStopped(2900, "u1"))
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    session.handle_realtime(rt.RealtimeOutputItemAdded("resp_1", "a1", "assistant"))
    sent = to_twilio(session.handle_realtime(delta("a1", tone(500, 0.1, 24000))))
    transcript = turns(session.handle_realtime(rt.RealtimeTranscriptDone("a1", "It ships today.")))
    assert transcript[0].ended_ms is None
    session.handle_realtime(rt.RealtimeAudioDone("resp_1", "a1"))
    records = turns(play_all(session, sent, from_ms=3500))
    first, last = records[0], records[-1]
    assert first.started_ms == 3500 and first.latency_ms == 3520 - 2900
    assert last == TurnRecord("a1", "assistant", 3500, 3600, "It ships today.", None, False, 620)


def test_an_interrupted_answer_keeps_its_full_text_and_what_was_heard() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    session.handle_realtime(rt.RealtimeOutputItemAdded("resp_1", "a1", "assistant"))
    sent = to_twilio(session.handle_realtime(delta("a1", tone(500, 1.0, 24000))))
    text = "one two three four five six seven eight nine ten"
    session.handle_realtime(rt.RealtimeTranscriptDone("a1", text))
    for name in marks(sent)[:25]:  # half of the answer played
        session.handle_twilio(tw.TwilioMark(name))
    at(session, 4000)
    [record] = turns(session.handle_realtime(rt.RealtimeSpeechStarted(3990, None)))
    assert record.interrupted and record.ended_ms == 4000
    assert record.text == text
    assert record.heard_text == "one two three four five"


def test_heard_text_is_cut_at_a_word_boundary() -> None:
    assert cut_heard_text("hello there friend", 500, 1000) == "hello"
    assert cut_heard_text("hello there friend", 990, 1000) == "hello there friend"
    assert cut_heard_text("hello there friend", 0, 1000) == ""


def test_played_audio_is_reported_only_when_recording() -> None:
    quiet, recording = pcm_session(), pcm_session(record_audio=True)
    for session in (quiet, recording):
        session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    answer = tone(500, 0.1, 24000)
    sent_quiet = to_twilio(quiet.handle_realtime(delta("a1", answer)))
    sent_recording = to_twilio(recording.handle_realtime(delta("a1", answer)))
    assert not [c for c in play_all(quiet, sent_quiet, 0) if isinstance(c, PlayedAudio)]
    played = [c for c in play_all(recording, sent_recording, 0) if isinstance(c, PlayedAudio)]
    media = b"".join(
        base64.b64decode(m["media"]["payload"]) for m in sent_recording if m["event"] == "media"
    )
    assert b"".join(p.ulaw for p in played) == media
    assert played[-1].ended_ms == 100


def function_call(
    name: str, arguments: str = "{}", response: str = "resp_1"
) -> rt.RealtimeFunctionCall:
    return rt.RealtimeFunctionCall(response, f"call_{name}", name, arguments)


def test_end_call_waits_for_the_goodbye_to_be_played() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    sent = to_twilio(session.handle_realtime(delta("a1", tone(500, 0.2, 24000))))
    commands = session.handle_realtime(function_call("end_call", '{"reason": "all done"}'))
    assert [
        json.loads(c.text)["item"]["type"] for c in commands if isinstance(c, SendToRealtime)
    ] == ["function_call_output"]
    assert not [c for c in commands if isinstance(c, HangUp)]
    assert not [
        c
        for c in session.handle_realtime(rt.RealtimeResponseDone("resp_1", "completed", None, None))
        if isinstance(c, HangUp)
    ]
    names = marks(sent)
    for name in names[:-1]:
        assert not [c for c in session.handle_twilio(tw.TwilioMark(name)) if isinstance(c, HangUp)]
    assert [
        c for c in session.handle_twilio(tw.TwilioMark(names[-1])) if isinstance(c, HangUp)
    ] == [HangUp("all done")]
    assert not [
        c
        for c in session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 99_000))
        if isinstance(c, HangUp)
    ]


def test_an_action_happens_at_the_deadline_if_marks_never_come_back() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    session.handle_realtime(delta("a1", tone(500, 0.2, 24000)))
    session.handle_realtime(function_call("transfer_call"))
    session.handle_realtime(rt.RealtimeResponseDone("resp_1", "completed", None, None))
    waiting = session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 5_000))
    assert not [c for c in waiting if isinstance(c, Transfer)]
    assert session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 20_000)) == [
        Transfer("the caller asked for a person")
    ]


def test_custom_tools_run_in_the_shell_and_their_result_goes_back() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    [run] = session.handle_realtime(function_call("get_order_status", '{"order_id": "4417"}'))
    assert isinstance(run, RunTool) and run.name == "get_order_status"
    # The response that asked is still active: the follow-up waits for its end.
    output = to_realtime(session.tool_finished(run.call_id, '{"status": "shipped"}'))
    assert output == [
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": run.call_id,
                "output": '{"status": "shipped"}',
            },
        }
    ]
    done = session.handle_realtime(rt.RealtimeResponseDone("resp_1", "completed", None, None))
    assert [m["type"] for m in to_realtime(done)] == ["response.create"]
    # With no response active, the model is asked to carry on at once.
    later = to_realtime(session.tool_finished("call_x", "{}"))
    assert [m["type"] for m in later] == ["conversation.item.create", "response.create"]


def test_outbound_calls_hold_the_greeting_until_a_person_answers() -> None:
    session = pcm_session(
        greeting="Hi, this is Acme.", hold_for_human=True, instructions="Be brief with Dana."
    )
    begin = to_realtime(session.begin())
    assert [m["type"] for m in begin] == ["session.update"]
    assert begin[0]["session"]["instructions"] == "Be brief with Dana."
    assert session.handle_twilio(tw.TwilioMedia(b"\x00" * 160, 0)) == []  # not sent to the model
    [greet] = to_realtime(session.answered("human"))
    assert "Hi, this is Acme." in greet["response"]["instructions"]
    assert to_realtime(session.handle_twilio(tw.TwilioMedia(b"\x00" * 160, 20)))


def test_a_machine_gets_the_voicemail_and_no_greeting() -> None:
    session = pcm_session(greeting="Hi", hold_for_human=True)
    assert session.begin() == []
    assert session.answered("machine_end_beep") == [LeaveVoicemail("machine_end_beep")]


def test_no_verdict_in_time_means_greeting_anyway() -> None:
    session = pcm_session(greeting="Hi", hold_for_human=True)
    session.begin()
    assert session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 7_980)) == []
    notice, greet = session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 8_000))
    assert isinstance(notice, Notice)
    assert isinstance(greet, SendToRealtime) and "response.create" in greet.text
    assert session.answered("human") == []  # too late to matter


def test_caller_audio_still_reaches_the_model_while_an_action_waits() -> None:
    session = pcm_session()
    session.handle_realtime(rt.RealtimeResponseCreated("resp_1"))
    session.handle_realtime(delta("a1", tone(500, 0.2, 24000)))
    session.handle_realtime(function_call("end_call"))
    [append] = to_realtime(session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 40)))
    assert append["type"] == "input_audio_buffer.append"
