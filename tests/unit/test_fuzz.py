"""Property-based fuzzing (issue 9): whatever a peer sends, the parsers raise nothing but
their protocol error, and the call session neither raises nor breaks its invariants.

Frames are built from the protocols' own vocabulary (event names, a few ids and mark
names, base64 audio, odd numbers) with junk mixed in, so that the fuzzer reaches deep into
the session rather than bouncing off the JSON decoder.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.call.core.messages import SendToRealtime, SendToTwilio
from bot.call.core.session import MAX_CLOCK_STEP_MS, CallSession, Phase
from bot.core import twilio
from bot.core.realtime import events as rt
from bot.core.realtime.client import decode_server_event, encode_client_event
from bot.core.realtime.dialects import (
    AUDIO_DELTA,
    AUDIO_DONE,
    TRANSCRIPT_DELTA,
    TRANSCRIPT_DONE,
    Dialect,
)
from bot.core.realtime.server import ClientEventError, decode_client_event
from bot.errors import RealtimeProtocolError, TwilioProtocolError

SID = "MZ" + "1" * 32
CALL = "CA" + "1" * 32

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
odd_numbers = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(["²", "٣", " 7 ", "1e3", "9" * 5000, "", "-0", "0x10"]),
    st.floats(allow_nan=True, allow_infinity=True),
    json_values,
)
audio = st.binary(max_size=480).map(lambda b: base64.b64encode(b).decode())
small_ids = st.sampled_from(["resp_1", "resp_2", "item_1", "item_2", "fc_1", ""]) | st.text(
    max_size=6
)


def _with_junk(draw: st.DrawFn, frame: dict[str, Any]) -> dict[str, Any]:
    """Now and then, fields deleted, replaced or added."""
    for key in draw(st.lists(st.sampled_from(sorted(frame) or ["x"]), max_size=2)):
        if draw(st.booleans()):
            frame.pop(key, None)
        else:
            frame[key] = draw(json_values)
    frame.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return frame


@st.composite
def twilio_frames(draw: st.DrawFn) -> str | bytes:
    event = draw(st.sampled_from(["media", "media", "media", "mark", "dtmf", "stop", "start"]))
    frame: dict[str, Any] = {"event": event, "streamSid": SID}
    if event == "media":
        stamp = draw(st.integers(0, 4000) | odd_numbers)
        frame["media"] = {"payload": draw(audio), "timestamp": stamp, "track": "inbound"}
    elif event == "mark":
        frame["mark"] = {"name": draw(st.sampled_from(["m1", "m2", "m3", "m4", "m9"]) | small_ids)}
    elif event == "dtmf":
        frame["dtmf"] = {"digit": draw(st.sampled_from(list("0123456789*#")) | st.text(max_size=3))}
    elif event == "start":
        frame["start"] = {"streamSid": SID, "callSid": CALL, "accountSid": "AC" + "2" * 32}
    if draw(st.integers(0, 9)) == 0:
        frame = _with_junk(draw, frame)
    text = json.dumps(frame)
    choice = draw(st.integers(0, 29))
    if choice == 0:
        return text.encode()
    if choice == 1:
        return text[: draw(st.integers(0, len(text)))]
    if choice == 2:
        return "[" * draw(st.integers(1, 100_000))
    return text


@st.composite
def server_frames(draw: st.DrawFn) -> str:
    kinds = sorted(AUDIO_DELTA | AUDIO_DONE | TRANSCRIPT_DELTA | TRANSCRIPT_DONE) + [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.created",
        "response.output_item.added",
        "response.done",
        "response.function_call_arguments.done",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.truncated",
        "error",
        "session.created",
    ]
    kind = draw(st.sampled_from(kinds))
    response_id = draw(st.sampled_from(["resp_1", "resp_2"]) | small_ids)
    item_id = draw(st.sampled_from(["item_1", "item_2"]) | small_ids)
    frame: dict[str, Any] = {"type": kind, "response_id": response_id, "item_id": item_id}
    if kind in AUDIO_DELTA:
        frame["delta"] = draw(audio)
    elif kind in TRANSCRIPT_DELTA:
        frame["delta"] = draw(st.text(max_size=10))
    elif kind in TRANSCRIPT_DONE or kind.endswith("completed"):
        frame["transcript"] = draw(st.text(max_size=10))
    elif kind.startswith("input_audio_buffer.speech"):
        frame["audio_start_ms"] = frame["audio_end_ms"] = draw(st.integers(-10, 10**12))
    elif kind == "conversation.item.truncated":
        frame["audio_end_ms"] = draw(st.integers(-10, 10**12))
    elif kind in ("response.created", "response.done"):
        status = draw(st.sampled_from(["in_progress", "completed", "cancelled", "failed"]))
        usage = draw(st.none() | st.fixed_dictionaries({"total_tokens": odd_numbers}))
        frame["response"] = {"id": response_id, "status": status, "usage": usage}
    elif kind == "response.output_item.added":
        role = draw(st.sampled_from(["assistant", "user", None]))
        kind_of_item = draw(st.sampled_from(["message", "function_call"]))
        frame["item"] = {"id": item_id, "type": kind_of_item, "role": role}
        frame["output_index"] = draw(st.integers(0, 2) | odd_numbers)
    elif kind == "response.function_call_arguments.done":
        frame["call_id"] = draw(small_ids)
        frame["name"] = draw(st.sampled_from(["end_call", "transfer_call", "lookup"]))
        frame["arguments"] = draw(st.sampled_from(["{}", '{"reason": "x"}', "not json", "[]"]))
    elif kind == "error":
        code = draw(st.sampled_from(["session_expired", "response_cancel_not_active", None]))
        frame["error"] = {"code": code, "message": draw(st.text(max_size=10))}
    elif kind == "session.created":
        frame["session"] = {"id": "sess_1", "expires_at": draw(odd_numbers)}
    if draw(st.integers(0, 9)) == 0:
        frame = _with_junk(draw, frame)
    return json.dumps(frame)


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TOO_DEEP = "[" * 50_000  # the JSON parser's recursion limit


@FUZZ
@given(
    st.one_of(st.just(TOO_DEEP), twilio_frames(), st.text(max_size=200), st.binary(max_size=200))
)
def test_twilio_frames_raise_only_protocol_errors(frame: str | bytes) -> None:
    try:
        twilio.decode(frame)
    except TwilioProtocolError:
        pass


@FUZZ
@given(
    st.one_of(st.just(TOO_DEEP), server_frames(), st.text(max_size=200), st.binary(max_size=200))
)
def test_realtime_server_events_raise_only_protocol_errors(frame: str | bytes) -> None:
    try:
        decode_server_event(frame)
    except RealtimeProtocolError:
        pass


client_kinds = st.sampled_from(
    [
        "input_audio_buffer.append",
        "session.update",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
        "input_audio_buffer.commit",
    ]
)


@FUZZ
@given(
    st.one_of(
        st.builds(
            lambda kind, fields: json.dumps({"type": kind, **fields}),
            client_kinds,
            st.dictionaries(
                st.sampled_from(
                    ["audio", "session", "item", "item_id", "audio_end_ms", "response"]
                ),
                json_values | audio | odd_numbers,
                max_size=4,
            ),
        ),
        st.text(max_size=200),
        st.just(TOO_DEEP),
    )
)
def test_client_events_raise_only_client_event_errors(frame: str) -> None:
    """The local backend's side: what a Realtime client sends to `/v1/realtime`."""
    try:
        decode_client_event(frame)
    except ClientEventError:
        pass


def _check_commands(commands: list[Any]) -> None:
    """Every command can go on the wire in both dialects."""
    for command in commands:
        if isinstance(command, SendToTwilio):
            twilio.encode(command.message)
        elif isinstance(command, SendToRealtime):
            for dialect in Dialect:
                encode_client_event(command.event, dialect)
            if isinstance(command.event, rt.TruncateItem):
                assert command.event.audio_end_ms >= 0


@FUZZ
@given(
    audio_format=st.sampled_from(list(rt.AudioFormat)),
    hold=st.booleans(),
    frames=st.lists(
        st.one_of(
            twilio_frames().map(lambda f: ("twilio", f)), server_frames().map(lambda f: ("rt", f))
        ),
        max_size=60,
    ),
)
def test_the_call_session_survives_any_frames(
    audio_format: rt.AudioFormat, hold: bool, frames: list[tuple[str, str | bytes]]
) -> None:
    session = CallSession(SID, CALL, audio_format, greeting="Hi", hold_for_human=hold)
    _check_commands(session.begin())
    for side, frame in frames:
        before, was_ended = session.now_ms, session.phase is Phase.ENDED
        try:
            event = twilio.decode(frame) if side == "twilio" else decode_server_event(frame)
        except (TwilioProtocolError, RealtimeProtocolError):
            continue
        if event is None:
            continue
        if side == "twilio":
            commands = session.handle_twilio(event)  # type: ignore[arg-type]
        else:
            commands = session.handle_realtime(event)  # type: ignore[arg-type]
        _check_commands(commands)
        session.take_reports()
        assert before <= session.now_ms <= before + MAX_CLOCK_STEP_MS
        if was_ended:
            assert commands == []
        stats = session.stats
        assert stats.frames_in >= 0 and stats.deltas_dropped >= 0
        assert 0 <= stats.playback.marks_played <= stats.playback.marks_sent
