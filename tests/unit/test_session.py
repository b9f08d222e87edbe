"""The call session driven with bare events, no sockets (h11 style)."""

from __future__ import annotations

import base64
import json
from typing import Any

from bot.call.core.messages import (
    Command,
    DigitPressed,
    EndCall,
    HangUp,
    Interrupted,
    LeaveVoicemail,
    Notice,
    PlayedAudio,
    ReplaceRealtime,
    Report,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    Transfer,
    TurnRecord,
)
from bot.call.core.session import CallSession, Phase
from bot.core import twilio as tw
from bot.core.codec import pcm16_to_ulaw
from bot.core.realtime import events as rt
from bot.core.realtime.client import encode_client_event
from bot.core.realtime.dialects import Dialect
from tests.audio_tools import tone

SID = "MZ" + "0" * 32
CALL = "CA" + "0" * 32


def pcm_session(**kw: Any) -> CallSession:
    return CallSession(SID, CALL, rt.AudioFormat.PCM16, **kw)


def delta(item: str, audio: bytes, response: str = "resp_1") -> rt.AudioDelta:
    return rt.AudioDelta(response, item, audio)


def created(response: str = "resp_1") -> rt.ResponseCreated:
    return rt.ResponseCreated(rt.ResponseInfo(response, "in_progress"))


def done(response: str = "resp_1", status: str = "completed", reason: str | None = None) -> Any:
    return rt.ResponseDone(rt.ResponseInfo(response, status, reason))


def assistant_item(response: str, item: str) -> rt.OutputItemAdded:
    return rt.OutputItemAdded(response, 0, rt.Item(item, "message", role="assistant"))


def to_twilio(commands: list[Command]) -> list[dict[str, Any]]:
    """What Twilio would receive, as JSON."""
    return [json.loads(tw.encode(c.message)) for c in commands if isinstance(c, SendToTwilio)]


def to_realtime(commands: list[Command]) -> list[dict[str, Any]]:
    """What the Realtime server would receive, as GA JSON."""
    return [
        json.loads(encode_client_event(c.event, Dialect.GA))
        for c in commands
        if isinstance(c, SendToRealtime)
    ]


def marks(messages: list[dict[str, Any]]) -> list[str]:
    return [m["mark"]["name"] for m in messages if m["event"] == "mark"]


def payloads(messages: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"]


def stream(
    session: CallSession, item: str, audio: bytes, delta_ms: int = 20, response: str = "resp_1"
) -> list[dict[str, Any]]:
    """The model's audio for an item in deltas of `delta_ms` (PCM16 at 24 kHz): what Twilio
    gets."""
    size = 48 * delta_ms
    sent: list[dict[str, Any]] = []
    for start in range(0, len(audio), size):
        piece = audio[start : start + size]
        sent += to_twilio(session.handle_realtime(delta(item, piece, response)))
    return sent


def test_caller_audio_is_transcoded_to_24k_and_appended() -> None:
    session = pcm_session()
    [append] = session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 0))
    assert isinstance(append, SendToRealtime) and isinstance(append.event, rt.AppendAudio)
    assert len(append.event.audio) == 960  # 20 ms of 24 kHz PCM16


def test_two_frames_per_append_send_the_same_audio_in_half_the_messages() -> None:
    """AUDIO_APPEND_MS=40: the model gets what frame-by-frame appends would give it, bit for
    bit (the resampler keeps its state across chunks), in one append per two frames."""
    caller = pcm16_to_ulaw(tone(440, 0.2, 8000))
    frames = [caller[i : i + 160] for i in range(0, len(caller), 160)]
    one, two = pcm_session(), pcm_session(append_frames=2)
    single = [
        to_realtime(one.handle_twilio(tw.TwilioMedia(f, 20 * n))) for n, f in enumerate(frames)
    ]
    paired = [
        to_realtime(two.handle_twilio(tw.TwilioMedia(f, 20 * n))) for n, f in enumerate(frames)
    ]
    assert [len(sent) for sent in single] == [1] * 10
    assert [len(sent) for sent in paired] == [0, 1] * 5  # the first of each pair waits
    audio = b"".join(base64.b64decode(e["audio"]) for sent in single for e in sent)
    assert b"".join(base64.b64decode(e["audio"]) for sent in paired for e in sent) == audio


def test_a_frame_waiting_for_its_pair_goes_to_the_next_session_not_the_lost_one() -> None:
    session = CallSession(SID, CALL, rt.AudioFormat.G711_ULAW, append_frames=2)
    session.handle_twilio(tw.TwilioMedia(b"\x01" * 160, 0))
    session.handle_twilio(tw.TwilioMedia(b"\x02" * 160, 20))
    assert session.handle_twilio(tw.TwilioMedia(b"\x03" * 160, 40)) == []  # waits for a pair
    session.realtime_lost()
    appends = [e for e in to_realtime(session.realtime_restored()) if "audio" in e]
    # The new session hears the lead-in, the waiting frame included, once.
    assert base64.b64decode(appends[0]["audio"]).endswith(b"\x02" * 160 + b"\x03" * 160)
    assert [
        len(e) for e in to_realtime(session.handle_twilio(tw.TwilioMedia(b"\x04" * 160, 60)))
    ] == []


def test_each_delta_goes_out_as_one_media_message_of_whole_20_ms_chunks_and_a_mark() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.105, 24000))))
    assert [m["event"] for m in sent] == ["media", "mark"]
    # 105 ms less the resampler's 1.6 ms of history: five whole chunks now, the rest later.
    assert [len(p) for p in payloads(sent)] == [800]
    assert all(m["streamSid"] == SID for m in sent)
    # The item's first message has a mark; the next ones, until 100 ms of audio, do not.
    more = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.02, 24000))))
    assert [m["event"] for m in more] == ["media"] and len(payloads(more)[0]) == 160
    # The partial last chunk goes out when the audio is done, with a mark after it.
    tail = to_twilio(session.handle_realtime(rt.AudioDone("resp_1", "item_1")))
    assert [m["event"] for m in tail] == ["media", "mark"]
    assert 0 < len(payloads(tail)[0]) < 160
    assert len(set(marks(sent + more + tail))) == 2


def test_short_deltas_get_a_mark_every_100_ms_of_audio() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    sent = stream(session, "item_1", tone(500, 1.0, 24000), delta_ms=20)
    assert sum(m["event"] == "media" for m in sent) == 50
    assert len(marks(sent)) == 10  # the first message's, then one per 100 ms


def test_barge_in_clears_twilio_and_truncates_at_the_heard_position() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    names = marks(stream(session, "item_1", tone(500, 1.0, 24000), delta_ms=100))
    assert len(names) == 10  # 1 s of audio in 100 ms deltas
    for name in names[:2]:  # Twilio played 200 ms
        session.handle_twilio(tw.TwilioMark(name))
    commands = session.handle_realtime(rt.SpeechStarted(5000, "user_1"))
    assert to_twilio(commands) == [{"event": "clear", "streamSid": SID}]
    assert to_realtime(commands) == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_1",
            "content_index": 0,
            "audio_end_ms": 200,
        }
    ]
    [interrupted] = [r for r in session.take_reports() if isinstance(r, Interrupted)]
    assert interrupted == Interrupted("item_1", 200, 1000, cleared=True, at_ms=0)
    assert session.stats.playback.clears == 1 and session.stats.interruptions == 1


def test_the_heard_position_runs_on_inside_the_message_that_is_playing() -> None:
    """Twilio cannot run dry inside one media message: after the last acknowledged mark, the
    next message plays from the echo's arrival (or from its sending, if it came later)."""
    session = pcm_session()
    at(session, 1000)
    session.handle_realtime(created())
    names = marks(stream(session, "item_1", tone(500, 1.0, 24000), delta_ms=500))
    assert len(names) == 2
    at(session, 1500)
    session.handle_twilio(tw.TwilioMark(names[0]))  # 500 ms played
    at(session, 1620)  # 120 ms into the second message
    [truncate] = to_realtime(session.handle_realtime(rt.SpeechStarted(1600, "user_1")))
    assert truncate["audio_end_ms"] == 620


def test_an_underrun_between_messages_is_not_counted_as_heard() -> None:
    """A slow model: the second delta comes 300 ms after the first one finished playing."""
    session = pcm_session()
    at(session, 1000)
    session.handle_realtime(created())
    first = marks(stream(session, "item_1", tone(500, 0.2, 24000), delta_ms=200))
    at(session, 1200)
    session.handle_twilio(tw.TwilioMark(first[0]))
    at(session, 1500)  # silence at the phone: nothing was queued
    stream(session, "item_1", tone(500, 0.2, 24000), delta_ms=200)
    at(session, 1560)
    [truncate] = to_realtime(session.handle_realtime(rt.SpeechStarted(1540, "user_1")))
    # 200 ms, then 50 ms of the second message: it was sent at 1500 and starts with Twilio's
    # next 20 ms packet (10 ms later on average). The resampler held 1.6 ms of the first.
    assert truncate["audio_end_ms"] in (248, 249, 250)


def test_after_clear_echoed_marks_and_late_deltas_change_nothing() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    names = marks(to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.5, 24000)))))
    session.handle_twilio(tw.TwilioMark(names[0]))
    session.handle_realtime(rt.SpeechStarted(100, "user_1"))
    # Twilio sends back every flushed mark: none of them was played.
    for name in names[1:]:
        assert session.handle_twilio(tw.TwilioMark(name)) == []
    assert session.stats.playback.marks_played == 1
    # The server was still streaming the interrupted answer.
    assert session.handle_realtime(delta("item_1", tone(500, 0.2, 24000))) == []
    assert session.stats.deltas_dropped == 1
    session.take_reports()
    session.handle_realtime(done(status="cancelled", reason="turn_detected"))
    assert not [r for r in session.take_reports() if isinstance(r, Notice) and r.level == "warning"]
    # The next answer plays normally.
    session.handle_realtime(created("resp_2"))
    fresh = to_twilio(session.handle_realtime(delta("item_2", tone(500, 0.1, 24000), "resp_2")))
    assert [m["event"] for m in fresh][:2] == ["media", "mark"]
    assert not session.playback.idle


def test_barge_in_after_playback_finished_does_nothing() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    sent = to_twilio(session.handle_realtime(delta("item_1", tone(500, 0.2, 24000))))
    sent += to_twilio(session.handle_realtime(rt.AudioDone("resp_1", "item_1")))
    session.handle_realtime(done())
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    assert session.playback.idle
    commands = session.handle_realtime(rt.SpeechStarted(9000, "user_2"))
    assert to_twilio(commands) == [] and to_realtime(commands) == []


def test_barge_in_while_generating_but_nothing_queued_truncates_without_clear() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    sent = stream(session, "item_1", tone(500, 0.1, 24000), delta_ms=100)
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    commands = session.handle_realtime(rt.SpeechStarted(9000, "user_2"))
    assert to_twilio(commands) == []
    [truncate] = to_realtime(commands)
    assert truncate["audio_end_ms"] == 100  # all of it played; the response goes on
    assert session.handle_realtime(delta("item_1", tone(500, 0.1, 24000))) == []


def test_truncation_never_exceeds_audio_received() -> None:
    session = CallSession(SID, CALL, rt.AudioFormat.G711_ULAW)
    session.handle_realtime(created())
    sent = to_twilio(session.handle_realtime(delta("item_1", b"\x7f" * 4000)))
    for name in marks(sent):
        session.handle_twilio(tw.TwilioMark(name))
    [truncate] = to_realtime(session.handle_realtime(rt.SpeechStarted(1, None)))
    assert truncate["audio_end_ms"] == 500 == 4000 // 8


def test_passthrough_forwards_audio_untouched_in_whole_20_ms_chunks() -> None:
    session = CallSession(SID, CALL, rt.AudioFormat.G711_ULAW)
    inbound = bytes(range(160))
    [append] = session.handle_twilio(tw.TwilioMedia(inbound, 0))
    assert isinstance(append, SendToRealtime) and append.event == rt.AppendAudio(inbound)
    outbound = bytes(range(256)) * 3
    sent = to_twilio(session.handle_realtime(delta("item_1", outbound)))
    sent += to_twilio(session.handle_realtime(rt.AudioDone("resp_1", "item_1")))
    assert b"".join(payloads(sent)) == outbound
    assert [len(p) for p in payloads(sent)] == [640, 128]


def test_greeting_asks_the_model_to_speak_first() -> None:
    assert pcm_session().begin() == []
    [create] = to_realtime(pcm_session(greeting="Hello from Acme!").begin())
    assert create["type"] == "response.create"
    assert "Hello from Acme!" in create["response"]["instructions"]


def test_words_to_say_wait_for_the_answer_being_given_and_keep_their_instructions() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    assert session.say("Your table is ready") == []  # a response is active
    [create] = to_realtime(session.handle_realtime(done()))
    assert create["type"] == "response.create"
    assert create["response"]["instructions"].endswith("Your table is ready")
    # With nothing active, at once.
    [now] = to_realtime(session.say("Thank you"))
    assert now["response"]["instructions"].endswith("Thank you")


def test_stop_ends_the_call_and_later_events_are_ignored() -> None:
    session = pcm_session()
    assert session.handle_twilio(tw.TwilioStop(CALL)) == [EndCall("caller", "caller hung up")]
    assert session.phase is Phase.ENDED
    assert session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 0)) == []
    assert session.handle_realtime(delta("item_1", b"\0" * 960)) == []


def test_realtime_errors_fatal_quiet_and_ordinary() -> None:
    session = pcm_session()
    assert session.handle_realtime(rt.ErrorEvent("response_cancel_not_active", "m")) == []
    assert session.take_reports() == [Notice("debug", "realtime: response_cancel_not_active", 0)]
    assert session.handle_realtime(rt.ErrorEvent("invalid_value", "bad")) == []
    [warning] = session.take_reports()
    assert isinstance(warning, Notice) and warning.level == "warning"
    assert session.phase is Phase.CONVERSING
    [renew] = session.handle_realtime(rt.ErrorEvent("session_expired", "60 minutes"))
    assert isinstance(renew, ReplaceRealtime)  # another session carries the call on
    assert session.phase is Phase.CONVERSING
    [fatal] = session.handle_realtime(rt.ErrorEvent("invalid_api_key", "no"))
    assert isinstance(fatal, EndCall) and fatal.by == "realtime"
    assert session.phase is Phase.ENDED


def test_dtmf_is_reported() -> None:
    session = pcm_session()
    session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 1340))
    commands = session.handle_twilio(tw.TwilioDtmf("5"))
    assert session.take_reports() == [DigitPressed("5", 1340)]
    item, create = to_realtime(commands)
    assert item["item"]["content"] == [
        {"type": "input_text", "text": "[The caller pressed 5 on the phone keypad]"}
    ]
    assert create["type"] == "response.create"


def test_the_call_clock_never_runs_back_or_leaps() -> None:
    """Issue 9, finding 7: a forged timestamp moved the clock (and the recording) anywhere."""
    session = pcm_session()
    clock = []
    for stamp in (20, 40, 10**20, 10**20 + 20, -5, None, 6_000, 6_020):
        session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, stamp))
        clock.append(session.now_ms)
    assert clock == [20, 40, 2_040, 4_040, 4_040, 4_040, 6_000, 6_020]


def test_barge_in_resets_the_output_resampler() -> None:
    """After an interruption the next answer starts from a clean filter, as a fresh call would."""
    interrupted = pcm_session()
    interrupted.handle_realtime(created())
    interrupted.handle_realtime(delta("item_1", tone(3000, 0.1, 24000, dbfs=-1)))
    interrupted.handle_realtime(rt.SpeechStarted(100, None))
    interrupted.handle_realtime(done(status="cancelled", reason="turn_detected"))
    fresh = pcm_session()
    answer = tone(440, 0.1, 24000)
    for session in (interrupted, fresh):
        session.handle_realtime(created("resp_2"))
    after = to_twilio(interrupted.handle_realtime(delta("item_2", answer, "resp_2")))
    clean = to_twilio(fresh.handle_realtime(delta("item_2", answer, "resp_2")))
    assert payloads(after) == payloads(clean)


def at(session: CallSession, ms: int) -> list[Command]:
    """Advance the session clock the way Twilio does: with media frames, a second apart at
    most (the session refuses longer leaps). Returns every command they produced."""
    commands: list[Command] = []
    while session.now_ms < ms:
        before = session.now_ms
        commands += session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, min(ms, before + 1000)))
        assert session.now_ms > before, "the clock stopped"
    return commands


def turns(session: CallSession) -> list[TurnRecord]:
    return [r for r in session.take_reports() if isinstance(r, TurnRecord)]


def play_all(session: CallSession, sent: list[dict[str, Any]], from_ms: int) -> list[Command]:
    """Twilio plays every message from `from_ms` on, acknowledging each mark when the audio
    before it has played."""
    out: list[Command] = []
    played_ms = 0.0
    for message in sent:
        if message["event"] == "media":
            played_ms += len(base64.b64decode(message["media"]["payload"])) / 8
        elif message["event"] == "mark":
            at(session, from_ms + int(played_ms))
            out += session.handle_twilio(tw.TwilioMark(message["mark"]["name"]))
    return out


def ack_until(session: CallSession, sent: list[dict[str, Any]], audio_ms: int) -> int:
    """Acknowledge every mark up to `audio_ms` of audio; returns the audio they cover."""
    played_ms, acked_ms = 0.0, 0
    for message in sent:
        if message["event"] == "media":
            played_ms += len(base64.b64decode(message["media"]["payload"])) / 8
        elif message["event"] == "mark" and played_ms <= audio_ms:
            session.handle_twilio(tw.TwilioMark(message["mark"]["name"]))
            acked_ms = int(played_ms)
    return acked_ms


def test_a_caller_turn_is_recorded_from_vad_and_transcription() -> None:
    session = pcm_session()
    session.handle_realtime(rt.SpeechStarted(1200, "u1"))
    assert turns(session) == [TurnRecord("u1", "caller", 1200, None, None)]
    session.handle_realtime(rt.SpeechStopped(2900, "u1"))
    [stopped] = turns(session)
    assert stopped.ended_ms == 2900
    session.handle_realtime(rt.InputTranscriptCompleted("u1", "Where is my order?"))
    assert turns(session) == [TurnRecord("u1", "caller", 1200, 2900, "Where is my order?")]


def test_an_answer_is_timed_by_marks_and_its_latency_runs_from_the_end_of_speech() -> None:
    session = pcm_session()
    session.handle_realtime(rt.SpeechStopped(2900, "u1"))
    session.handle_realtime(created())
    session.handle_realtime(assistant_item("resp_1", "a1"))
    sent = stream(session, "a1", tone(500, 0.1, 24000))
    session.take_reports()
    session.handle_realtime(rt.TranscriptDone("resp_1", "a1", "It ships today."))
    assert turns(session)[0].ended_ms is None
    sent += to_twilio(session.handle_realtime(rt.AudioDone("resp_1", "a1")))
    play_all(session, sent, from_ms=3500)
    records = turns(session)
    first, last = records[0], records[-1]
    assert first.started_ms == 3500 and first.latency_ms == 3520 - 2900
    assert last == TurnRecord("a1", "assistant", 3500, 3600, "It ships today.", None, False, 620)


def test_an_interrupted_answer_keeps_its_full_text_and_what_was_heard() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    session.handle_realtime(assistant_item("resp_1", "a1"))
    sent = stream(session, "a1", tone(500, 1.0, 24000))
    text = "one two three four five six seven eight nine ten"
    session.handle_realtime(rt.TranscriptDone("resp_1", "a1", text))
    at(session, 4000)
    assert 500 <= ack_until(session, sent, 520) <= 520  # half of the answer played
    session.take_reports()
    session.handle_realtime(rt.SpeechStarted(3990, None))
    [record] = turns(session)
    assert record.interrupted and record.ended_ms == 4000
    assert record.text == text
    assert record.heard_text == "one two three four five"


def test_transcript_deltas_place_the_cut_where_their_audio_played() -> None:
    """Speech rate varies: each transcript delta is cut by the audio that followed it."""
    session = pcm_session()
    session.handle_realtime(created())
    session.handle_realtime(assistant_item("resp_1", "a1"))
    sent: list[dict[str, Any]] = []
    for words, seconds in (("Yes. ", 1.0), ("Your order shipped on Monday afternoon. ", 1.0)):
        session.handle_realtime(rt.TranscriptDelta("resp_1", "a1", words))
        sent += stream(session, "a1", tone(500, seconds, 24000))
    session.handle_realtime(
        rt.TranscriptDone("resp_1", "a1", "Yes. Your order shipped on Monday afternoon.")
    )
    # 1.4 s: a slow "Yes." and 40 % of the second sentence.
    assert 1400 <= ack_until(session, sent, 1420) <= 1420
    session.take_reports()
    session.handle_realtime(rt.SpeechStarted(3990, None))
    [record] = turns(session)
    # In proportion to the whole answer's audio, 70 % of it would claim far more was heard.
    assert record.heard_text == "Yes. Your order"


def test_played_audio_is_reported_only_when_recording() -> None:
    quiet, recording = pcm_session(), pcm_session(record_audio=True)
    for session in (quiet, recording):
        session.handle_realtime(created())
    answer = tone(500, 0.1, 24000)
    sent_quiet = stream(quiet, "a1", answer)
    sent_quiet += to_twilio(quiet.handle_realtime(rt.AudioDone("resp_1", "a1")))
    sent_recording = stream(recording, "a1", answer)
    sent_recording += to_twilio(recording.handle_realtime(rt.AudioDone("resp_1", "a1")))
    play_all(quiet, sent_quiet, 0)
    play_all(recording, sent_recording, 0)
    assert not [r for r in quiet.take_reports() if isinstance(r, PlayedAudio)]
    played = [r for r in recording.take_reports() if isinstance(r, PlayedAudio)]
    assert b"".join(p.ulaw for p in played) == b"".join(payloads(sent_recording))
    assert played[-1].ended_ms == 100


def function_call(
    name: str, arguments: str = "{}", response: str = "resp_1"
) -> rt.FunctionCallArguments:
    return rt.FunctionCallArguments(response, f"fc_{name}", f"call_{name}", name, arguments)


def actions(commands: list[Command]) -> list[Command]:
    return [c for c in commands if isinstance(c, HangUp | Transfer)]


def test_end_call_waits_for_the_goodbye_to_be_played() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    sent = to_twilio(session.handle_realtime(delta("a1", tone(500, 0.2, 24000))))
    commands = session.handle_realtime(function_call("end_call", '{"reason": "all done"}'))
    assert [m["item"]["type"] for m in to_realtime(commands)] == ["function_call_output"]
    assert not actions(commands)
    assert session.phase is Phase.WINDING_DOWN
    assert not actions(session.handle_realtime(done()))
    names = marks(sent)
    for name in names[:-1]:
        assert not actions(session.handle_twilio(tw.TwilioMark(name)))
    assert actions(session.handle_twilio(tw.TwilioMark(names[-1]))) == [HangUp("all done")]
    assert session.phase is Phase.ENDED
    assert not actions(session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 99_000)))


def test_an_action_happens_at_the_deadline_if_marks_never_come_back() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    session.handle_realtime(delta("a1", tone(500, 0.2, 24000)))
    session.handle_realtime(function_call("transfer_call"))
    session.handle_realtime(done())
    assert not actions(at(session, 5_000))
    assert actions(at(session, 20_000)) == [Transfer("the caller asked for a person")]


def test_custom_tools_run_in_the_shell_and_their_result_goes_back() -> None:
    session = pcm_session()
    session.handle_realtime(created())
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
    assert [m["type"] for m in to_realtime(session.handle_realtime(done()))] == ["response.create"]
    # With no response active, the model is asked to carry on at once.
    later = to_realtime(session.tool_finished("call_x", "{}"))
    assert [m["type"] for m in later] == ["conversation.item.create", "response.create"]


def test_outbound_calls_hold_the_greeting_until_a_person_answers() -> None:
    session = pcm_session(
        greeting="Hi, this is Acme.", hold_for_human=True, instructions="Be brief with Dana."
    )
    assert session.phase is Phase.AWAITING_PERSON
    begin = to_realtime(session.begin())
    assert [m["type"] for m in begin] == ["session.update"]
    assert begin[0]["session"] == {"type": "realtime", "instructions": "Be brief with Dana."}
    assert session.handle_twilio(tw.TwilioMedia(b"\x00" * 160, 0)) == []  # not sent to the model
    [greet] = to_realtime(session.answered("human"))
    assert "Hi, this is Acme." in greet["response"]["instructions"]
    assert session.phase is Phase.CONVERSING
    assert to_realtime(session.handle_twilio(tw.TwilioMedia(b"\x00" * 160, 20)))


def test_a_machine_gets_the_voicemail_and_no_greeting() -> None:
    session = pcm_session(greeting="Hi", hold_for_human=True)
    assert session.begin() == []
    assert session.answered("machine_end_beep") == [LeaveVoicemail("machine_end_beep")]
    assert session.phase is Phase.ENDED


def test_no_verdict_in_time_means_greeting_anyway() -> None:
    session = pcm_session(greeting="Hi", hold_for_human=True)
    session.begin()
    assert at(session, 7_980) == []
    [greet] = to_realtime(session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 8_000)))
    assert greet["type"] == "response.create"
    [notice] = session.take_reports()
    assert isinstance(notice, Notice) and "no answering-machine verdict" in notice.message
    assert session.answered("human") == []  # too late to matter


def test_caller_audio_still_reaches_the_model_while_an_action_waits() -> None:
    session = pcm_session()
    session.handle_realtime(created())
    session.handle_realtime(delta("a1", tone(500, 0.2, 24000)))
    session.handle_realtime(function_call("end_call"))
    [append] = to_realtime(session.handle_twilio(tw.TwilioMedia(b"\xff" * 160, 40)))
    assert append["type"] == "input_audio_buffer.append"


def test_every_report_is_taken_once() -> None:
    session = pcm_session()
    session.handle_twilio(tw.TwilioDtmf("1"))
    first: list[Report] = session.take_reports()
    assert first == [DigitPressed("1", 0)] and session.take_reports() == []
