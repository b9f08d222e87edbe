"""Audio through the real app, end to end: simulator ⇄ uvicorn/Quart bridge ⇄ fake Realtime."""

from __future__ import annotations

import logging

import pytest

from bot.core.codec import pcm16_to_ulaw, ulaw_to_pcm16
from bot.simulator import simulate
from tests.audio_tools import active_region, dominant_hz, level_dbfs_at, tone
from tests.conftest import eventually, run_app, settings_from
from tests.fake_realtime import FakeRealtime, pcm16_tone


@pytest.mark.parametrize("plain_asgi", [False, True], ids=["bot serve", "plain ASGI"])
async def test_tone_round_trip_both_directions(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture, plain_asgi: bool
) -> None:
    """Caller tone reaches the model as 24 kHz PCM16; the model's tone reaches the caller.
    Under `bot serve` the media socket is picows'; under another ASGI server, ASGI's."""
    caplog.set_level(logging.INFO)
    # The caller's tone must not count as barging in here.
    async with FakeRealtime(answer=pcm16_tone(1000, 1.0, dbfs=-10), vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi there", FORWARD_DTMF="false"
        )
        async with run_app(settings, plain_asgi=plain_asgi) as app:
            caller = pcm16_to_ulaw(tone(600, 1.0, 8000, dbfs=-10))
            result = await simulate(
                app.url, auth_token=app.secret, say=caller, duration_s=2.0, dtmf=[(0.5, "7")]
            )
    assert result.webhook_status == 200
    [conn] = fake.connections
    heard_by_model = conn.input_pcm16()
    assert dominant_hz(heard_by_model[: 24000 * 2], 24000) == pytest.approx(600, abs=5)
    assert level_dbfs_at(heard_by_model[: 24000 * 2], 600, 24000) == pytest.approx(-10, abs=1)
    heard_by_caller = active_region(ulaw_to_pcm16(result.output_ulaw))
    assert len(heard_by_caller) == pytest.approx(16000, abs=160)  # 1 s, within a frame
    assert dominant_hz(heard_by_caller, 8000) == pytest.approx(1000, abs=5)
    assert level_dbfs_at(heard_by_caller, 1000, 8000, skip_s=0.01) == pytest.approx(-10, abs=1)
    assert result.first_audio_s is not None and result.first_audio_s < 1.0
    assert result.marks_acked == result.marks_received > 0
    assert "caller pressed 7" in caplog.text


async def test_barge_in_clears_twilio_and_truncates_at_what_was_played(
    base_env: dict[str, str],
) -> None:
    """The caller speaks 1 s into a 3 s answer: Twilio is cleared, the item is truncated
    within one 20 ms frame of what the phone actually played, and nothing of the
    interrupted answer reaches the phone afterwards, late deltas included."""
    async with FakeRealtime(answer=pcm16_tone(440, 3.0, dbfs=-12), late_deltas=3) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi", INTERRUPTIONS="instant"
        )
        async with run_app(settings) as app:
            interruption = pcm16_to_ulaw(tone(2000, 1.0, 8000, dbfs=-6))
            result = await simulate(
                app.url,
                auth_token=app.secret,
                barge_in_at_s=1.0,
                barge_in=interruption,
                duration_s=2.5,
            )
    [conn] = fake.connections
    assert conn.speech_started_at is not None
    [clear] = result.clears
    [truncate] = conn.truncates
    assert truncate["content_index"] == 0
    assert 900 <= clear.played_ms <= 1300
    assert abs(int(truncate["audio_end_ms"]) - clear.played_ms) <= 20
    assert clear.flushed_bytes > 0 and clear.flushed_marks > 0
    assert conn.late_deltas_sent == 3
    assert result.bytes_after_last_clear == 0
    # The phone played the answer up to the barge-in and nothing after it.
    assert result.bytes_played == pytest.approx(clear.played_ms * 8, abs=160)


@pytest.mark.parametrize(
    ("speed", "delta_ms", "barge_in_at_s"),
    [(0.6, 200, 1.0), (0.6, 200, 1.15), (0.6, 200, 1.3), (0.8, 60, 1.1)],
)
async def test_with_a_slow_model_the_truncation_is_within_20_ms_of_what_played(
    base_env: dict[str, str], speed: float, delta_ms: int, barge_in_at_s: float
) -> None:
    """The model streams slower than real time, so the phone runs dry between deltas (an
    underrun after every one). The heard position after the last acknowledged mark comes
    from the call clock, over messages that may have no mark of their own. The barge-in
    falls inside a message or inside a gap, and the truncation stays within 20 ms of what
    the phone played."""
    answer = pcm16_tone(440, 3.0, dbfs=-12)
    async with FakeRealtime(answer=answer, speed=speed, delta_ms=delta_ms) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=app.secret,
                barge_in_at_s=barge_in_at_s,
                barge_in=pcm16_to_ulaw(tone(2000, 1.0, 8000, dbfs=-6)),
                duration_s=2.2,
            )
    [conn] = fake.connections
    [truncate] = conn.truncates
    if result.clears:  # audio was queued at the phone
        [clear] = result.clears
        played_ms = clear.played_ms
    else:  # the barge-in fell in a gap: the phone had played all it got, and no more came
        played_ms = result.bytes_played / 8
    # The phone was silent part of the time: less played than the time that passed.
    assert 300 <= played_ms <= 1000 * barge_in_at_s
    print(f"truncated at {truncate['audio_end_ms']} ms, played {played_ms:.1f} ms")
    assert abs(int(truncate["audio_end_ms"]) - played_ms) <= 20
    # A mark on the answer's first message, then one per 100 ms of audio: with 60 ms deltas,
    # messages in between have none, and the clock alone places the caller among them.
    if delta_ms >= 100:
        assert result.marks_received == pytest.approx(result.media_received, abs=1)
    else:
        assert result.marks_received < result.media_received


async def test_g711_mode_passes_payloads_through_untouched(base_env: dict[str, str]) -> None:
    answer = bytes(range(256)) * 40  # 1.28 s of arbitrary μ-law
    async with FakeRealtime(answer=answer, vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, REALTIME_AUDIO="g711_ulaw", BOT_GREETING="Hi"
        )
        async with run_app(settings) as app:
            caller = bytes(reversed(range(256))) * 25  # 0.8 s, not 160-aligned
            result = await simulate(app.url, auth_token=app.secret, say=caller, duration_s=2.0)
    [conn] = fake.connections
    session = conn.of_type("session.update")[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert bytes(conn.input_audio[: len(caller)]) == caller
    assert set(conn.input_audio[len(caller) :]) == {0xFF}  # then Twilio's silence
    assert result.output_ulaw.find(answer) >= 0


async def test_fast_mode_streams_without_real_time_pacing(base_env: dict[str, str]) -> None:
    async with FakeRealtime(answer=pcm16_tone(1000, 2.0), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            caller = pcm16_to_ulaw(tone(600, 3.0, 8000))
            result = await simulate(
                app.url, auth_token=app.secret, say=caller, duration_s=3.0, fast=True
            )
            [conn] = fake.connections
            # The fake reads what the bridge sent before its close in its own time.
            await eventually(lambda: conn.closed_at is not None, what="the model's socket closing")
    assert result.frames_sent == 150
    assert result.duration_s < 1.5
    assert len(conn.input_audio) == 150 * 960
