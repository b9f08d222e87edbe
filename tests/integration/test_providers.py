"""GA and beta dialects, OpenAI and Azure connection shapes, against the fake server."""

from __future__ import annotations

import pytest

from bot.simulator import simulate
from tests.conftest import LOCAL_SECRET, TEST_KEY, eventually, run_app, settings_from
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.twilio_client import fetch_twiml, new_call_sid


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_both_dialects_carry_a_whole_call(base_env: dict[str, str], dialect: str) -> None:
    async with FakeRealtime(
        dialect=dialect, answer=pcm16_tone(900, 0.6), vad_threshold_rms=1e9
    ) as fake:
        settings = settings_from(
            base_env,
            REALTIME_URL=fake.url,
            REALTIME_DIALECT=dialect,
            BOT_VOICE="alloy",
            BOT_GREETING="Hello",
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=1.5)
    [conn] = fake.connections
    assert conn.headers.get("openai-beta") == ("realtime=v1" if dialect == "beta" else None)
    assert conn.path == "/v1/realtime?model=gpt-realtime"
    [update] = conn.of_type("session.update")
    session = update["session"]
    if dialect == "ga":
        assert session["audio"]["output"]["voice"] == "alloy"
    else:
        assert session["voice"] == "alloy" and session["input_audio_format"] == "pcm16"
    # The fake answered in its own dialect's event names; the caller heard all of it.
    assert result.bytes_received == 4800
    assert conn.of_type("response.create")


async def test_azure_ga_connection_shape(base_env: dict[str, str]) -> None:
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        azure_url = fake.url.replace("/v1/realtime", "/openai/v1/realtime")
        settings = settings_from(
            base_env,
            REALTIME_URL=azure_url,
            REALTIME_MODEL="my-realtime-deployment",
            REALTIME_AUTH="api-key",
        )
        async with run_app(settings) as app:
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.5)
    [conn] = fake.connections
    assert conn.path == "/openai/v1/realtime?model=my-realtime-deployment"
    assert conn.headers["api-key"] == TEST_KEY
    assert "authorization" not in conn.headers


async def test_azure_preview_connection_shape(base_env: dict[str, str]) -> None:
    async with FakeRealtime(dialect="beta", vad_threshold_rms=1e9) as fake:
        preview = fake.url.replace(
            "/v1/realtime",
            "/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-4o-realtime",
        )
        settings = settings_from(
            base_env,
            REALTIME_URL=preview,
            REALTIME_AUTH="api-key",
            REALTIME_DIALECT="beta",
            REALTIME_API_KEY="azure-key",
        )
        async with run_app(settings) as app:
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.5)
    [conn] = fake.connections
    assert conn.path == "/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-4o-realtime"
    assert conn.headers["api-key"] == "azure-key"
    assert conn.headers["openai-beta"] == "realtime=v1"


async def test_realtime_is_opened_at_the_webhook_so_the_greeting_is_not_delayed(
    base_env: dict[str, str],
) -> None:
    async with FakeRealtime(answer=pcm16_tone(500, 0.3), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            status, _ = await fetch_twiml(app.url, LOCAL_SECRET, new_call_sid())
            assert status == 200
            # Open before Twilio has even connected the media stream.
            await eventually(
                lambda: (
                    len(fake.connections) == 1
                    and bool(fake.connections[0].of_type("session.update"))
                ),
                what="the session opening at the webhook",
            )
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=1.0)
    assert result.first_audio_s is not None and result.first_audio_s < 0.5
    assert len(fake.connections) == 2  # the unclaimed pre-open was not reused by another call
