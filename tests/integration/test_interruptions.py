"""Pause, then decide (INTERRUPTIONS=confirm), over real sockets: a cough or an "uh-huh"
over an answer pauses it and it goes on, byte for byte; "wait, stop, I have a question"
stops it within a frame and truncates it at what was heard. μ-law passes through, so the
phone's audio can be compared with the model's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bot.core.codec import pcm16_to_ulaw
from bot.simulator import SimulationResult, simulate
from tests.audio_tools import tone
from tests.conftest import ended_call, review_page_and_metrics, run_app, settings_from
from tests.fake_realtime import FakeConnection, FakeRealtime, Scripted

SILENCE_FRAME = b"\xff" * 160
REVIEW_PASSWORD = "review-pass-123"
ANSWER = pcm16_to_ulaw(tone(440, 3.0, 8000, dbfs=-12))  # the model's audio, as the phone gets it


def noise_burst(seconds: float) -> bytes:
    """A cough-like burst: loud broadband noise."""
    rng = np.random.default_rng(7)
    samples = rng.normal(0, 6000, int(seconds * 8000)).clip(-32768, 32767).astype("<i2")
    return pcm16_to_ulaw(samples.tobytes())


def played_answer(result: SimulationResult) -> bytes:
    """What the phone played of the bot, without the silence between."""
    out = result.output_ulaw
    frames = [out[i : i + 160] for i in range(0, len(out), 160)]
    return b"".join(f for f in frames if f != SILENCE_FRAME)


async def a_call(
    base_env: dict[str, str], sound: bytes, at_s: float, fake: FakeRealtime, **env: str
) -> SimulationResult:
    settings = settings_from(
        base_env,
        REALTIME_URL=fake.url,
        REALTIME_AUDIO="g711_ulaw",
        BOT_GREETING="Hi",
        INTERRUPTIONS="confirm",
        REVIEW_PASSWORD=REVIEW_PASSWORD,
        **env,
    )
    async with run_app(settings) as app:
        result = await simulate(
            app.url, auth_token=app.secret, barge_in_at_s=at_s, barge_in=sound, duration_s=5.0
        )
        await ended_call(settings, result.call_sid)
        result.page, result.metrics = await review_page_and_metrics(  # type: ignore[attr-defined]
            app.url, result.call_sid, REVIEW_PASSWORD
        )
        return result


def answered(conn: FakeConnection) -> int:
    return len(conn.of_type("response.create"))


@pytest.mark.parametrize(
    ("sound", "heard_as"),
    [(noise_burst(0.2), "*cough*"), (pcm16_to_ulaw(tone(180, 0.35, 8000, dbfs=-8)), "uh-huh")],
    ids=["a 200 ms cough", "an uh-huh"],
)
async def test_a_false_interruption_pauses_and_the_answer_goes_on_byte_for_byte(
    base_env: dict[str, str], sound: bytes, heard_as: str
) -> None:
    fake = FakeRealtime(answer=ANSWER, caller_texts=(heard_as,))
    async with fake:
        result = await a_call(base_env, sound, 1.0, fake)
    [conn] = fake.connections
    assert conn.speech_started_at is not None  # the server heard it as speech
    [clear] = result.clears  # the phone stopped at once...
    assert not conn.truncates  # ...but nothing was cut
    assert answered(conn) == 1  # only the greeting: the model was not asked to answer it
    [deleted] = conn.of_type("conversation.item.delete")  # nor does it keep it
    assert deleted["item_id"] == conn.of_type("conversation.item.delete")[0]["item_id"]
    assert played_answer(result) == ANSWER  # the whole answer, byte for byte
    sound_end = result.frames_sent_at[0] + 1.0 + len(sound) / 8000
    resumed = min(
        t
        for t in result.media_received_at
        if t > sound_end - 0.1 and t > clear.at_s + result.frames_sent_at[0]
    )
    print(f"{heard_as}: playback resumed {1000 * (resumed - sound_end):.0f} ms after the sound")
    assert resumed - sound_end <= 0.3
    # The review page and /metrics show it as a false interruption, not a barge-in.
    assert "not an interruption" in result.page  # type: ignore[attr-defined]
    assert "+ 1 false" in result.page  # type: ignore[attr-defined]
    assert "bot_false_interruptions_total 1.0" in result.metrics  # type: ignore[attr-defined]
    assert "bot_barge_ins_total 0.0" in result.metrics  # type: ignore[attr-defined]


async def test_a_real_interruption_stops_within_a_frame_and_truncates_at_what_was_heard(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Wait, stop, I have a question",))
    speech = pcm16_to_ulaw(tone(2000, 1.5, 8000, dbfs=-6))
    async with fake:
        result = await a_call(base_env, speech, 1.0, fake)
    [conn] = fake.connections
    assert conn.speech_started_at is not None
    clear = result.clears[0]
    # Stopped within one 20 ms frame of the server's speech_started.
    stopped = result.frames_sent_at[0] + clear.at_s
    assert stopped - conn.speech_started_at <= 0.02
    [truncate] = conn.truncates
    assert abs(int(truncate["audio_end_ms"]) - clear.played_ms) <= 20
    assert conn.of_type("response.cancel")  # the bridge stops the answer itself
    [truncated_at] = [
        at
        for event, at in zip(conn.events, conn.received_at, strict=True)
        if event["type"] == "conversation.item.truncate"
    ]
    confirmed_after = truncated_at - conn.speech_started_at
    print(f"confirmed {confirmed_after * 1000:.0f} ms after speech_started")
    assert 0.4 <= confirmed_after <= 0.8  # INTERRUPT_MIN_MS of sound, from the pause
    assert re.search(r"; confirmed after \d+ ms", result.page)  # type: ignore[attr-defined]
    assert "bot_barge_ins_total 1.0" in result.metrics  # type: ignore[attr-defined]
    assert "bot_false_interruptions_total 0.0" in result.metrics  # type: ignore[attr-defined]
    assert answered(conn) == 2  # and asks for the answer to the question when it is over


async def test_an_interruption_with_a_pause_in_it_is_still_one(base_env: dict[str, str]) -> None:
    """ "Wait, ... stop, I have a question": the first word alone sounds like a backchannel,
    so the answer plays on; more speech in the same turn stops it again, and its length in
    all confirms the interruption."""
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Wait.", "Stop, I have a question"))
    word = pcm16_to_ulaw(tone(2000, 0.2, 8000, dbfs=-6))
    gap = b"\xff" * int(0.35 * 8000)
    rest = pcm16_to_ulaw(tone(2000, 1.0, 8000, dbfs=-6))
    async with fake:
        result = await a_call(base_env, word + gap + rest, 1.0, fake)
    [conn] = fake.connections
    first, second = result.clears  # stopped, played on in the gap, stopped again
    assert second.at_s - first.at_s > 0.3
    [truncate] = conn.truncates
    heard_ms = first.played_ms + second.played_ms
    assert abs(int(truncate["audio_end_ms"]) - heard_ms) <= 40
    assert len(conn.of_type("response.cancel")) == 1
    assert answered(conn) == 2


async def test_a_protected_greeting_plays_to_its_end_and_the_caller_is_answered_after(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Is this a recorded line?",))
    speech = pcm16_to_ulaw(tone(2000, 1.2, 8000, dbfs=-6))
    async with fake:
        result = await a_call(base_env, speech, 1.0, fake, GREETING_INTERRUPTIBLE="false")
    [conn] = fake.connections
    assert conn.speech_started_at is not None  # the caller spoke over it...
    assert not result.clears and not conn.truncates  # ...and it played on, untouched
    assert played_answer(result).startswith(ANSWER)
    assert conn.input_audio  # what they said reached the model
    # The model was asked to answer them only once the greeting was done.
    created = [
        at
        for event, at in zip(conn.events, conn.received_at, strict=True)
        if event["type"] == "response.create"
    ]
    [greeting_done] = [
        at for name, at in zip(conn.sent, conn.sent_at, strict=True) if name == "response.done"
    ][:1]
    assert len(created) == 2 and created[1] >= greeting_done


async def test_a_short_sound_whose_words_interrupt_is_confirmed_by_its_transcript(
    base_env: dict[str, str],
) -> None:
    """ "Wait, stop." in 350 ms, shorter than INTERRUPT_MIN_MS: the answer plays on while the
    transcript comes, and its two real words confirm the interruption, cut where it was
    heard by then."""
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Wait, stop.",), transcript_delay_s=0.2)
    speech = pcm16_to_ulaw(tone(2000, 0.35, 8000, dbfs=-6))
    async with fake:
        result = await a_call(base_env, speech, 1.0, fake)
    [conn] = fake.connections
    first_clear = result.clears[0]
    [truncate] = conn.truncates
    assert int(truncate["audio_end_ms"]) > first_clear.played_ms  # it played on meanwhile
    assert len(conn.of_type("response.cancel")) == 1
    assert answered(conn) == 2  # the bridge answers the turn that interrupted
    assert not conn.of_type("conversation.item.delete")
    [second_word] = [
        at
        for name, at in zip(conn.sent, conn.sent_at, strict=True)
        if name == "conversation.item.input_audio_transcription.delta"
    ][1:2]
    [truncated_at] = [
        at
        for event, at in zip(conn.events, conn.received_at, strict=True)
        if event["type"] == "conversation.item.truncate"
    ]
    print(f"confirmed {1000 * (truncated_at - second_word):.0f} ms after its second word")
    assert 0 <= truncated_at - second_word <= 0.1


async def test_a_sound_whose_transcript_never_comes_is_not_an_interruption(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Wait, stop.",), transcript_delay_s=4.0)
    async with fake:
        result = await a_call(base_env, noise_burst(0.2), 1.0, fake)
    [conn] = fake.connections
    assert not conn.truncates
    assert answered(conn) == 1
    assert len(conn.of_type("conversation.item.delete")) == 1  # after TRANSCRIPT_WAIT_MS
    assert played_answer(result) == ANSWER


async def test_a_disclosure_from_a_tool_plays_to_its_end(base_env: dict[str, str]) -> None:
    """A tool returns a `Disclosure`: the model is asked to say its words exactly, and the
    caller speaking over them neither stops nor cuts them; they are answered after."""
    script = [Scripted(tool=("recording_notice", "{}")), Scripted(audio=ANSWER, text="Recorded.")]
    fake = FakeRealtime(answer=ANSWER, caller_texts=("Why?",), script=script)
    speech = pcm16_to_ulaw(tone(2000, 1.2, 8000, dbfs=-6))
    async with fake:
        result = await a_call(base_env, speech, 1.0, fake, BOT_TOOLS="tests.disclosure_tools")
    [conn] = fake.connections
    assert conn.speech_started_at is not None
    assert not result.clears and not conn.truncates and not conn.of_type("response.cancel")
    assert played_answer(result).startswith(ANSWER)
    creates = conn.of_type("response.create")
    said = json.dumps(creates[1])
    assert "This call is recorded for quality and training." in said
    assert len(creates) == 3  # the greeting (a tool call), the disclosure, then the caller
