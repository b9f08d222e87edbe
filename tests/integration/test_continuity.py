"""A call outlives its Realtime session, over real sockets: the fake Realtime server drops
during caller speech, during an answer and during a tool call, refuses a reconnect, stays
down, and expires; an old session is renewed at a turn boundary; a silent caller is
prompted and hung up on. The phone is the simulator, the bridge runs under its real server.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bot.call.core.prompt import say_request
from bot.core.codec import pcm16_to_ulaw, ulaw_to_pcm16
from bot.simulator import SimulationResult, simulate
from tests.audio_tools import dominant_hz, tone
from tests.conftest import (
    LOCAL_SECRET,
    ended_call,
    eventually,
    review_page_and_metrics,
    run_app,
    settings_from,
)
from tests.fake_realtime import FakeConnection, FakeRealtime, Scripted, pcm16_tone

SILENCE_FRAME = b"\xff" * 160
REVIEW_PASSWORD = "review-pass-123"
ANSWER_TEXT = "One two three four five six"


def speech(seconds: float) -> bytes:
    return pcm16_to_ulaw(tone(440, seconds, 8000))


def quiet(seconds: float) -> bytes:
    return b"\xff" * int(seconds * 8000)


def seeded(conn: FakeConnection) -> list[tuple[str, str]]:
    """(role or item type, text or name) of the items a session was given, in order."""
    shown = []
    for event in conn.of_type("conversation.item.create"):
        item = event["item"]
        assert isinstance(item, dict)
        if item["type"] == "message":
            [part] = item["content"]
            shown.append((str(item["role"]), str(part["text"])))
        else:
            shown.append((str(item["type"]), str(item.get("name") or item.get("call_id"))))
    return shown


def sent_at(conn: FakeConnection, kind: str) -> list[float]:
    return [
        at for event, at in zip(conn.events, conn.received_at, strict=True) if event["type"] == kind
    ]


def silence_after(result: SimulationResult, at: float) -> float:
    """Seconds of the first silence the phone played after `at` (monotonic), up to the next
    bot audio. The phone may still be playing at `at` (a clear takes a moment): the silence
    starts at its first quiet frame."""
    output = result.output_ulaw
    frame = max(0, int((at - result.frames_sent_at[0]) / 0.02))  # its playout clock
    for _ in range(10):  # within 200 ms, or there was no silence
        if output[frame * 160 : frame * 160 + 160] == SILENCE_FRAME:
            break
        frame += 1
    else:
        return 0.0
    quiet_frames = 0
    while frame * 160 < len(output) and output[frame * 160 : frame * 160 + 160] == SILENCE_FRAME:
        quiet_frames += 1
        frame += 1
    return quiet_frames * 0.02


async def call_with(
    fake: FakeRealtime,
    env: dict[str, str],
    say: bytes,
    during: Callable[[], Awaitable[None]],
    **settings: str,
) -> tuple[SimulationResult, float]:
    """A simulated call while `during` acts on the fake; its result and its start time."""
    app_settings = settings_from(
        env, REALTIME_URL=fake.url, REVIEW_PASSWORD=REVIEW_PASSWORD, **settings
    )
    async with run_app(app_settings) as app:
        started = time.monotonic()
        call = asyncio.create_task(
            simulate(app.url, auth_token=LOCAL_SECRET, say=say, duration_s=len(say) / 8000)
        )
        await during()
        result = await call
        row = await ended_call(app_settings, result.call_sid)
        result.page, result.metrics = await review_page_and_metrics(  # type: ignore[attr-defined]
            app.url, result.call_sid, REVIEW_PASSWORD
        )
    result.row = row  # type: ignore[attr-defined]
    return result, started


def drop(conn: FakeConnection) -> float:
    """The TCP connection just goes (no close frame)."""
    assert conn.socket is not None
    conn.socket.transport.abort()
    return time.monotonic()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_drop_during_an_answer_reseeds_what_was_heard_and_the_answer_goes_on(
    base_env: dict[str, str], dialect: str
) -> None:
    greeting = Scripted(pcm16_tone(600, 0.6), "Hello there.")
    fake = FakeRealtime(
        dialect=dialect,
        answer=pcm16_tone(500, 3.0),
        answer_text=ANSWER_TEXT,
        auto_respond=True,
        caller_texts=("Where is my order?",),
        script=[greeting],
    )
    dropped_at = 0.0

    async def during() -> None:
        nonlocal dropped_at
        await eventually(
            lambda: (
                bool(fake.connections) and fake.connections[0].sent.count("response.created") == 2
            ),
            10,
            what="the answer",
        )
        await asyncio.sleep(1.1)  # a third of it has played
        dropped_at = drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake,
            base_env,
            quiet(1.2) + speech(0.8) + quiet(6.0),
            during,
            BOT_GREETING="Hello",
            BOT_TOOLS="bot.example_tools",
            REALTIME_DIALECT=dialect,
        )
    assert len(fake.connections) == 2
    new = fake.connections[1]
    [update, *_] = new.events
    assert update["type"] == "session.update"
    session = update["session"]
    assert isinstance(session, dict) and [t["name"] for t in session["tools"]] == [
        "end_call",
        "get_order_status",
    ]
    items = seeded(new)
    assert items[:2] == [("assistant", "Hello there."), ("user", "Where is my order?")]
    role, heard = items[2]
    assert (
        role == "assistant" and ANSWER_TEXT.startswith(heard) and 0 < len(heard) < len(ANSWER_TEXT)
    )
    assert len(items) == 3
    [create] = new.of_type("response.create")
    [assistant] = [e["item"] for e in new.of_type("conversation.item.create")][-1:]
    if dialect == "ga":
        assert create["response"] == {"output_modalities": ["audio"]}
        assert assistant["content"][0]["type"] == "output_text"
    else:
        assert create["response"] == {"modalities": ["text", "audio"]}
        assert assistant["content"][0]["type"] == "text"
    delta = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
    assert delta in new.sent  # the next answer is audio...
    gap = silence_after(result, dropped_at)
    assert gap <= 1.5, gap  # ...and the caller heard it soon
    assert len(result.clears) == 1  # the unheard rest of the cut answer was flushed
    assert result.row["ended_by"] == "caller"  # type: ignore[attr-defined]
    kinds = [e["kind"] for e in result.row["events"]]  # type: ignore[attr-defined]
    assert kinds.count("reconnect") == 1
    assert "⟳ <b>reconnect</b>: Realtime socket connection lost" in result.page  # type: ignore[attr-defined]
    metrics = result.metrics  # type: ignore[attr-defined]
    assert 'bot_realtime_session_changes_total{kind="reconnect"} 1.0' in metrics
    assert "bot_realtime_reconnect_seconds_count 1.0" in metrics


async def test_a_drop_during_caller_speech_hands_the_speech_to_the_new_session(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(
        answer=pcm16_tone(500, 1.0),
        auto_respond=True,
        script=[Scripted(pcm16_tone(600, 0.4), "Hi.")],
    )

    async def during() -> None:
        await eventually(
            lambda: bool(fake.connections) and fake.connections[0].speech_started_at is not None,
            10,
            what="speech",
        )
        await asyncio.sleep(0.5)
        drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake, base_env, quiet(1.2) + speech(2.0) + quiet(4.0), during, BOT_GREETING="Hi"
        )
    new = fake.connections[1]
    assert seeded(new) == [("assistant", "Hi.")]
    # All the speech reached the new session, the part before the drop included.
    loud = [s for s in _frames(new.input_pcm16()) if _rms(s) > 1500]
    assert len(loud) * 0.02 >= 1.9
    assert new.speech_started_at is not None and "response.output_audio.delta" in new.sent
    end_of_speech = result.frames_sent_at[0] + 3.2
    assert silence_after(result, end_of_speech) <= 1.5


async def test_a_drop_during_a_tool_call_seeds_the_call_then_its_output(
    base_env: dict[str, str],
) -> None:
    greeting = Scripted(
        pcm16_tone(600, 0.3), "Let me check.", tool=("slow_lookup", '{"order_id": "4417"}')
    )
    fake = FakeRealtime(
        answer=pcm16_tone(500, 1.0), answer_text="It has shipped.", script=[greeting]
    )
    dropped_at = 0.0

    async def during() -> None:
        nonlocal dropped_at
        conn = fake.connections
        await eventually(
            lambda: bool(conn) and "response.function_call_arguments.done" in conn[0].sent,
            10,
            what="the tool call",
        )
        await asyncio.sleep(0.4)
        dropped_at = drop(conn[0])

    async with fake:
        result, started = await call_with(
            fake, base_env, quiet(5.0), during, BOT_GREETING="Hi", BOT_TOOLS="tests.slow_tools"
        )
    new = fake.connections[1]
    items = seeded(new)
    assert [kind for kind, _ in items] == ["assistant", "function_call", "function_call_output"]
    assert items[:2] == [("assistant", "Let me check."), ("function_call", "slow_lookup")]
    output_at = sent_at(new, "conversation.item.create")[2]
    [create_at] = sent_at(new, "response.create")
    assert create_at >= output_at  # the model carries on once it has the result
    assert "response.output_audio.delta" in new.sent
    assert silence_after(result, dropped_at) <= 1.5


async def test_a_reconnect_refused_with_401_ends_the_call_politely(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(answer=pcm16_tone(500, 0.5))
    dropped_at = 0.0

    async def during() -> None:
        nonlocal dropped_at
        await eventually(
            lambda: bool(fake.connections) and bool(fake.connections[0].appended_at),
            10,
            what="audio",
        )
        fake.reject_status = 401
        dropped_at = drop(fake.connections[0])

    async with fake:
        result, _ = await call_with(fake, base_env, quiet(6.0), during)
    assert result.close_code == 1000  # Twilio speaks the fallback
    assert time.monotonic() - dropped_at < 5
    assert result.duration_s < 3
    row = result.row  # type: ignore[attr-defined]
    assert row["ended_by"] == "realtime" and "HTTP 401" in row["end_reason"]


async def test_a_provider_that_stays_down_ends_the_call_after_the_wait(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(answer=pcm16_tone(500, 0.5))
    dropped_at = 0.0

    async def during() -> None:
        nonlocal dropped_at
        await eventually(
            lambda: bool(fake.connections) and bool(fake.connections[0].appended_at),
            10,
            what="audio",
        )
        fake.reject_status = 503
        dropped_at = drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake, base_env, quiet(8.0), during, REALTIME_RECONNECT_S="1.5"
        )
    assert result.close_code == 1000
    ended_after = result.frames_sent_at[0] + result.duration_s - dropped_at
    assert 1.3 < ended_after < 2.5, ended_after
    assert fake.handshakes >= 3  # it kept trying, with back-off
    row = result.row  # type: ignore[attr-defined]
    assert row["ended_by"] == "realtime" and "no new session within 1.5 s" in row["end_reason"]


async def test_session_expired_moves_the_call_to_a_new_session(base_env: dict[str, str]) -> None:
    fake = FakeRealtime(
        answer=pcm16_tone(500, 0.5),
        close_after_s=1.5,
        close_code=1001,
        error_before_close={
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": "Your session hit the maximum duration of 60 minutes.",
        },
        script=[Scripted(pcm16_tone(600, 0.4), "Hi.")],
    )

    async def during() -> None:
        await eventually(lambda: len(fake.connections) >= 2, 10, what="a second session")
        fake.close_after_s = None

    async with fake:
        result, _ = await call_with(fake, base_env, quiet(4.0), during, BOT_GREETING="Hi")
    assert result.row["ended_by"] == "caller"  # type: ignore[attr-defined]
    assert seeded(fake.connections[1])[0] == ("assistant", "Hi.")


async def test_renewal_waits_for_a_turn_boundary_and_adds_no_gap(base_env: dict[str, str]) -> None:
    # The greeting plays from about 0.1 s to 7.1 s; the session comes of age at 5 s.
    fake = FakeRealtime(
        answer=pcm16_tone(500, 1.0),
        auto_respond=True,
        caller_texts=("Thanks.",),
        script=[Scripted(pcm16_tone(600, 7.0), "A long greeting.")],
    )

    async def during() -> None:
        await eventually(lambda: len(fake.connections) == 2, 10, what="the new session")

    async with fake:
        result, started = await call_with(
            fake,
            base_env,
            quiet(8.0) + speech(0.8) + quiet(2.0),
            during,
            BOT_GREETING="Hi",
            REALTIME_SESSION_MAX_S="5",
        )
    old, new = fake.connections[:2]  # (the new one comes of age at 10 s, and is renewed too)
    assert 4.9 < new.opened_at - old.opened_at < 6.5  # opened beside the old one...
    [done_at] = sent_at_server(old, "response.done")
    [first_seed] = sent_at(new, "conversation.item.create")[:1]
    assert first_seed > done_at  # ...and swapped in only after the greeting was over
    assert seeded(new) == [("assistant", "A long greeting.")]
    assert old.closed_at is not None and old.closed_at - first_seed < 1.0
    assert not result.clears  # nothing was cut
    greeting = _loud_run(result.output_ulaw, 0)
    assert 6.9 <= greeting * 0.02 <= 7.1  # the greeting played without a gap
    assert "response.output_audio.delta" in new.sent  # the next answer came from the new one
    kinds = [e["kind"] for e in result.row["events"]]  # type: ignore[attr-defined]
    assert kinds.count("renewal") >= 1


async def test_a_silent_caller_is_prompted_then_hung_up_on_at_the_set_times(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(
        answer=pcm16_tone(500, 0.5),
        script=[Scripted(pcm16_tone(600, 0.5), "Hi.")],
    )

    async def during() -> None:
        return None

    async with fake:
        result, started = await call_with(
            fake,
            base_env,
            quiet(15.0),
            during,
            BOT_GREETING="Hi",
            IDLE_PROMPT_S="1.5",
            IDLE_PROMPTS="1",
        )
    conn = fake.connections[0]
    asked = [
        (event["response"].get("instructions"), at)
        for event, at in zip(conn.events, conn.received_at, strict=True)
        if event["type"] == "response.create"
    ]
    assert [words for words, _ in asked][1:] == [
        say_request("Are you still there?"),
        say_request("I haven't heard from you, so I'll end the call now. Goodbye."),
    ]
    # Each prompt comes 1.5 s after the last audio was heard (its last mark came back).
    acks = result.mark_acked_at
    for _, at in asked[1:]:
        heard_before = max(a for a in acks if a < at)
        assert 1.4 < at - heard_before < 1.9, at - heard_before
    assert result.close_code == 1000 and result.duration_s < 8
    row = result.row  # type: ignore[attr-defined]
    assert (row["ended_by"], row["end_reason"]) == ("bot", "hung up: the caller stayed silent")
    assert "the caller is silent: asked whether they are there (1)" in result.page  # type: ignore[attr-defined]
    assert 'bot_idle_prompts_total{kind="goodbye"} 1.0' in result.metrics  # type: ignore[attr-defined]


def _frames(pcm16: bytes, rate: int = 24000) -> list[bytes]:
    size = rate // 50 * 2
    return [pcm16[i : i + size] for i in range(0, len(pcm16), size)]


def _rms(pcm16: bytes) -> float:
    from bot.core.codec import rms

    return rms(pcm16)


def _loud_run(ulaw: bytes, start_frame: int) -> int:
    """Frames of bot audio in a row from the first one at or after `start_frame`."""
    frames = [ulaw[i : i + 160] for i in range(start_frame * 160, len(ulaw), 160)]
    index = next(i for i, f in enumerate(frames) if f != SILENCE_FRAME)
    run = 0
    while index + run < len(frames) and frames[index + run] != SILENCE_FRAME:
        run += 1
    return run


def sent_at_server(conn: FakeConnection, kind: str) -> list[float]:
    return [at for name, at in zip(conn.sent, conn.sent_at, strict=True) if name == kind]


async def test_the_filler_plays_while_the_bridge_reconnects(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    filler = tmp_path / "hold.wav"
    with wave.open(str(filler), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(16000)
        clip.writeframes(tone(1000, 2.0, 16000))
    fake = FakeRealtime(answer=pcm16_tone(500, 0.5))
    dropped_at = 0.0

    async def during() -> None:
        nonlocal dropped_at
        await eventually(
            lambda: bool(fake.connections) and len(fake.connections[0].appended_at) > 25,
            10,
            what="audio",
        )
        fake.reject_status = 503  # the provider is away for a moment
        dropped_at = drop(fake.connections[0])
        await asyncio.sleep(0.8)
        fake.reject_status = None

    async with fake:
        result, _ = await call_with(
            fake, base_env, quiet(4.0), during, RECONNECT_FILLER=str(filler)
        )
    assert len(fake.connections) == 2
    origin = result.frames_sent_at[0]
    start = int((dropped_at - origin) / 0.02) + 3
    played = ulaw_to_pcm16(result.output_ulaw[start * 160 : (start + 25) * 160])
    assert abs(dominant_hz(played, 8000) - 1000) < 20  # the filler, during the gap...
    assert len(result.clears) == 1  # ...cleared once the new session was there
    reconnected = fake.connections[1].opened_at
    assert 0.7 < reconnected - dropped_at < 2.5  # tries at 0, 0.25, 0.75 and 1.75 s
    assert abs(result.clears[0].at_s - (reconnected - origin)) < 0.1
