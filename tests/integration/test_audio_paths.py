"""Audio through the real app, end to end: simulator ⇄ Hypercorn/Quart bridge ⇄ fake Realtime."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from bot.config import Settings
from bot.sansio.realtime import AudioFormat
from bot.simulator import simulate
from tests.audio_tools import active_region, dominant_hz, level_dbfs_at, tone
from tests.conftest import run_app
from tests.fake_realtime import FakeRealtime, pcm16_tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


async def test_tone_round_trip_both_directions(base_settings: Settings) -> None:
    """Caller tone reaches the model as 24 kHz PCM16; the model's tone reaches the caller."""
    # The caller's tone must not count as barging in here.
    async with FakeRealtime(answer=pcm16_tone(1000, 1.0, dbfs=-10), vad_threshold_rms=1e9) as fake:
        settings = dataclasses.replace(
            base_settings, realtime_url=fake.url, bot_greeting="Hi there"
        )
        async with run_app(settings) as app:
            caller = audioop.lin2ulaw(tone(600, 1.0, 8000, dbfs=-10), 2)
            result = await simulate(
                app.url, auth_token=app.secret, say=caller, duration_s=2.0, fast=False
            )
    assert result.webhook_status == 200
    [conn] = fake.connections
    heard_by_model = conn.input_pcm16()
    assert dominant_hz(heard_by_model[: 24000 * 2], 24000) == pytest.approx(600, abs=5)
    assert level_dbfs_at(heard_by_model[: 24000 * 2], 600, 24000) == pytest.approx(-10, abs=1)
    heard_by_caller = active_region(audioop.ulaw2lin(result.output_ulaw, 2))
    assert len(heard_by_caller) == pytest.approx(16000, abs=160)  # 1 s, within a frame
    assert dominant_hz(heard_by_caller, 8000) == pytest.approx(1000, abs=5)
    assert level_dbfs_at(heard_by_caller, 1000, 8000, skip_s=0.01) == pytest.approx(-10, abs=1)
    assert result.first_audio_s is not None and result.first_audio_s < 1.0
    assert result.marks_acked == result.marks_received > 0
