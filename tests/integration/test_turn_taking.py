"""Turn detection and noise reduction reach the provider: for every call from settings, and
per outbound call from its signed parameters, in both dialects."""

from __future__ import annotations

import pytest

from bot.simulator import simulate
from tests.conftest import LOCAL_SECRET, eventually, run_app, settings_from
from tests.fake_realtime import FakeRealtime


def audio_input(session: dict[str, object], dialect: str) -> tuple[object, object]:
    if dialect == "ga":
        inputs = session["audio"]["input"]  # type: ignore[index]
        return inputs.get("turn_detection"), inputs.get("noise_reduction")  # type: ignore[union-attr]
    return session.get("turn_detection"), session.get("input_audio_noise_reduction")


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_settings_and_a_calls_own_choice_reach_the_provider(
    base_env: dict[str, str], dialect: str
) -> None:
    async with FakeRealtime(dialect=dialect, vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env,
            REALTIME_URL=fake.url,
            REALTIME_DIALECT=dialect,
            TURN_DETECTION="semantic_vad",
            VAD_EAGERNESS="high",
            NOISE_REDUCTION="near_field",
        )
        async with run_app(settings) as app:
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.3)
            # An outbound call's own choice, from the (signed) webhook URL it was placed with.
            query = {
                "turn_detection": "server_vad",
                "noise_reduction": "far_field",
                "vad_eagerness": "bogus",  # not a choice: ignored, the call goes on
            }
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.3, webhook_query=query)
            await eventually(lambda: len(fake.connections) >= 2, what="both sessions")
    first, second = fake.connections[0], fake.connections[-1]
    [opening] = first.of_type("session.update")
    vad, noise = audio_input(opening["session"], dialect)  # type: ignore[arg-type]
    assert vad == {  # pause, then decide (the default): the bridge owns the responses
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": False,
        "interrupt_response": False,
    }
    assert noise == {"type": "near_field"}
    opening, own = second.of_type("session.update")
    vad, noise = audio_input(own["session"], dialect)  # type: ignore[arg-type]
    assert vad["type"] == "server_vad" and vad["silence_duration_ms"] == 500  # type: ignore[index]
    assert noise == {"type": "far_field"}
