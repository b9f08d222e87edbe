"""Listened calls (`CALL_MODE=transcribe`), over real sockets: the voice webhook forks the
call with `<Start><Stream track="both_tracks">` beside a `<Dial>`, the phone streams both
tracks one-way, and each track's transcription session gives speaker-labelled turns."""

from __future__ import annotations

import asyncio
import wave
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import websockets
from openai.types.beta.realtime import TranscriptionSessionUpdate
from openai.types.realtime import SessionUpdateEvent

from bot.core import twilio
from bot.core.codec import pcm16_to_ulaw
from bot.simulator import SimulationResult, simulate
from tests.audio_tools import tone
from tests.conftest import ended_call, eventually, run_app, settings_from, stored_call
from tests.fake_openai import FakeOpenAI
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.fake_twilio import FakeTwilio
from tests.twilio_client import fetch_twiml, new_call_sid, stream_parameters

CALLER_HZ, AGENT_HZ = 300, 700
CALLER_WORDS = "Hi, my order has not arrived."
AGENT_WORDS = "Let me look that up for you."
FORWARD_TO = "+15550009999"
ACCOUNT, TOKEN = "AC" + "a" * 32, "listen-auth-token"


def speech_at(freq_hz: int, at_s: float, seconds: float, total_s: float) -> bytes:
    """A track: silence, a tone standing for speech, silence."""
    pcm = np.zeros(int(total_s * 8000), "<i2")
    start = int(at_s * 8000)
    voice = np.frombuffer(tone(freq_hz, seconds, 8000, dbfs=-10), "<i2")
    pcm[start : start + len(voice)] = voice
    return pcm16_to_ulaw(pcm.tobytes())


def listen_env(base_env: dict[str, str], fake: FakeRealtime, **more: str) -> dict[str, str]:
    return {
        **base_env,
        "REALTIME_URL": fake.url,
        "REALTIME_DIALECT": fake.dialect,
        "CALL_MODE": "transcribe",
        "FORWARD_TO": FORWARD_TO,
        **more,
    }


async def listened_call(
    base_env: dict[str, str], fake: FakeRealtime, **more: str
) -> tuple[SimulationResult, dict[str, object], Path]:
    settings = settings_from(listen_env(base_env, fake, **more))
    caller = speech_at(CALLER_HZ, 0.4, 1.0, 4.0)
    agent = speech_at(AGENT_HZ, 2.0, 1.0, 4.0)
    async with run_app(settings) as app:
        result = await simulate(
            app.url, auth_token=app.secret, say=caller, agent=agent, duration_s=4.0
        )
        call = await ended_call(settings, result.call_sid)
    return result, call, settings.calllog.recordings_path


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_listened_call_gives_speaker_labelled_turns(
    base_env: dict[str, str], dialect: str
) -> None:
    fake = FakeRealtime(
        dialect=dialect, texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS}
    )
    async with fake:
        result, call, recordings = await listened_call(base_env, fake, RECORD_AUDIO="true")
    # The TwiML, exactly: the fork with the per-call token, and the person's number.
    assert result.forked
    stream = ET.fromstring(result.twiml).find("./Start/Stream")
    assert stream is not None
    token = next(
        p.attrib["value"] for p in stream.findall("Parameter") if p.attrib["name"] == "token"
    )
    assert result.twiml == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response>\n"
        "  <Start>\n"
        f'    <Stream name="transcription" url="{stream.attrib["url"]}" track="both_tracks">\n'
        '      <Parameter name="from" value="+15550100001"/>\n'
        '      <Parameter name="to" value="+15550100002"/>\n'
        '      <Parameter name="direction" value="inbound"/>\n'
        '      <Parameter name="mode" value="listen"/>\n'
        f'      <Parameter name="token" value="{token}"/>\n'
        "    </Stream>\n"
        "  </Start>\n"
        f'  <Dial answerOnBridge="true"><Number>{FORWARD_TO}</Number></Dial>\n'
        "</Response>\n"
    )
    assert stream.attrib["url"].endswith("/twilio/media")
    # One-way: nothing ever went back to Twilio.
    assert (result.media_received, result.marks_received, result.clears) == (0, 0, [])
    assert not result.unexpected
    # One transcription session per track, opened with the intent and no model.
    assert len(fake.connections) == 2
    for conn in fake.connections:
        assert "intent=transcription" in conn.path and "model=" not in conn.path
        [opening] = conn.events[:1]
        if dialect == "ga":
            SessionUpdateEvent.model_validate(opening)
            assert opening["session"]["type"] == "transcription"  # type: ignore[index]
        else:
            TranscriptionSessionUpdate.model_validate(opening)
        assert not conn.of_type("response.create")
    said = [(t["speaker"], t["text"]) for t in call["turns"]]  # type: ignore[attr-defined]
    assert said == [("caller", CALLER_WORDS), ("agent", AGENT_WORDS)]
    caller_turn, agent_turn = call["turns"]  # type: ignore[misc]
    assert caller_turn["started_ms"] == pytest.approx(400, abs=100)
    assert agent_turn["started_ms"] == pytest.approx(2000, abs=100)
    assert call["audio_mode"] == "listen" and call["ended_by"] == "caller"
    # The recording: the caller left, the person who answered right.
    with wave.open(str(next(recordings.glob(f"{result.call_sid}-*.wav"))), "rb") as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    for channel, hz in ((0, CALLER_HZ), (1, AGENT_HZ)):
        spectrum = np.abs(np.fft.rfft(frames[:, channel].astype(np.float64)))
        assert np.fft.rfftfreq(len(frames), 1 / 8000)[int(np.argmax(spectrum))] == pytest.approx(
            hz, abs=5
        )


async def test_the_forks_stream_needs_its_per_call_token(base_env: dict[str, str]) -> None:
    async with FakeRealtime() as fake:
        settings = settings_from(listen_env(base_env, fake))
        async with run_app(settings) as app:
            call_sid = new_call_sid()
            status, twiml = await fetch_twiml(app.url, app.secret, call_sid)
            assert status == 200
            _, params = stream_parameters(twiml)
            assert params["mode"] == "listen"
            stream_url = app.url.replace("http", "ws") + "/twilio/media"
            for custom in (
                {k: v for k, v in params.items() if k != "token"},
                {**params, "token": params["token"] + "x"},
                {**params, "mode": "bot"},  # the token binds the mode too
            ):
                async with websockets.connect(stream_url) as ws:
                    await ws.send(twilio.phone_connected())
                    await ws.send(
                        twilio.phone_start(
                            "MZ" + "1" * 32,
                            call_sid,
                            "AC" + "0" * 32,
                            custom,
                            1,
                            ("inbound", "outbound"),
                        )
                    )
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 2)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert fake.handshakes == 0  # no transcription session was opened for any of them


async def test_frames_with_no_track_or_an_unknown_one_are_skipped_and_counted(
    base_env: dict[str, str],
) -> None:
    fake = FakeRealtime(texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS})
    async with fake:
        settings = settings_from(listen_env(base_env, fake))
        caller = speech_at(CALLER_HZ, 0.4, 1.0, 3.0)
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=app.secret,
                say=caller,
                agent=speech_at(AGENT_HZ, 2.0, 0.5, 3.0),
                duration_s=3.0,
                odd_tracks={5: None, 6: "sideways", 7: None},
            )
            call = await ended_call(settings, result.call_sid)
            async with aiohttp.ClientSession() as http, http.get(app.url + "/metrics") as response:
                metrics = await response.text()
    [skipped] = [e for e in call["events"] if e["kind"] == "skipped_frames"]
    assert skipped["detail"] == "media frames skipped: 2 no track, 1 unknown track"
    assert 'bot_skipped_frames_total{reason="no track"} 2.0' in metrics
    assert 'bot_skipped_frames_total{reason="unknown track"} 1.0' in metrics
    said = [(t["speaker"], t["text"]) for t in call["turns"]]
    assert said == [("caller", CALLER_WORDS), ("agent", AGENT_WORDS)]  # the call went on


async def test_a_failing_transcription_backend_stops_only_the_fork(
    base_env: dict[str, str],
) -> None:
    """The provider goes away mid-call and refuses to come back: the bridge closes the fork's
    socket (Twilio's `<Dial>` goes on), never touches the call through the REST API, and
    logs the failure on the call."""
    fake = FakeRealtime(texts_by_pitch={CALLER_HZ: CALLER_WORDS})
    async with FakeTwilio(ACCOUNT, TOKEN) as rest, fake:
        env = listen_env(
            {
                **base_env,
                "TWILIO_ACCOUNT_SID": ACCOUNT,
                "TWILIO_AUTH_TOKEN": TOKEN,
                "PUBLIC_URL": "http://127.0.0.1:0",
            },
            fake,
            TWILIO_API_URL=rest.url,
            REALTIME_RECONNECT_S="1",
        )
        settings = settings_from(env)
        async with run_app(settings) as app:
            call = asyncio.create_task(
                simulate(
                    app.url,
                    auth_token=TOKEN,
                    account_sid=ACCOUNT,
                    say=speech_at(CALLER_HZ, 0.3, 0.6, 8.0),
                    agent=b"",
                    duration_s=8.0,
                )
            )
            await eventually(lambda: len(fake.connections) == 2, what="both sessions")
            done = "conversation.item.input_audio_transcription.completed"
            await eventually(
                lambda: any(done in c.sent for c in fake.connections), what="the caller's turn"
            )
            fake.reject_status = 503
            for conn in fake.connections:
                assert conn.socket is not None
                await conn.socket.close(1011, "provider down")
            result = await asyncio.wait_for(call, 10)
            row = await ended_call(settings, result.call_sid)
    assert result.duration_s < 6  # the bridge closed the fork; it did not run to the end
    assert result.close_code == 1000 and result.close_reason == "fork over"
    assert (result.media_received, result.marks_received, result.clears) == (0, 0, [])
    assert rest.requests == []  # the call itself was left alone
    errors = [e["detail"] for e in row["events"] if e["kind"] == "error"]
    assert any("transcription failed" in e and "the fork stops" in e for e in errors), errors
    assert row["ended_by"] == "realtime"
    assert [(t["speaker"], t["text"]) for t in row["turns"]] == [("caller", CALLER_WORDS)]


async def test_after_the_call_a_summary_and_action_items_reach_the_log_and_the_page(
    base_env: dict[str, str],
) -> None:
    reply = (
        '```json\n{"summary": "The caller\'s order has not arrived; the agent looks it up.", '
        '"action_items": ["Trace the order", "Call the customer back"]}\n```'
    )
    fake = FakeRealtime(texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS})
    async with FakeOpenAI(chat_reply=reply) as chat, fake:
        env = {
            "SUMMARY_MODEL": "gpt-4o-mini",
            "SUMMARY_URL": chat.url,
            "SUMMARY_API_KEY": "sk-summary",
            "REVIEW_PASSWORD": "review-pass-123",
        }
        settings = settings_from(listen_env(base_env, fake, **env))
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=app.secret,
                say=speech_at(CALLER_HZ, 0.4, 1.0, 3.5),
                agent=speech_at(AGENT_HZ, 2.0, 1.0, 3.5),
                duration_s=3.5,
            )

            async def summarized() -> dict[str, object] | None:
                call = await stored_call(settings, result.call_sid)
                return next((e for e in call["events"] if e["kind"] == "summary"), None)

            summary = None
            for _ in range(50):
                summary = await summarized()
                if summary is not None:
                    break
                await asyncio.sleep(0.1)
            assert summary is not None, "no summary"
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                live = f"{app.url}/calls/{result.call_sid}/live"
                async with http.get(live) as response:
                    assert response.status == 401  # the live view is behind the login
                login = {"password": "review-pass-123", "next": "/calls"}
                async with http.post(app.url + "/login", data=login) as response:
                    assert response.status == 200
                async with http.get(f"{app.url}/calls/{result.call_sid}") as response:
                    page = await response.text()
                async with http.get(live) as response:  # the call is over: it says so
                    assert response.headers["Content-Type"].startswith("text/event-stream")
                    stream = await response.text()
    assert summary["data"] == {
        "summary": "The caller's order has not arrived; the agent looks it up.",
        "action_items": ["Trace the order", "Call the customer back"],
    }
    [(kind, request)] = chat.requests
    assert kind == "chat" and request["model"] == "gpt-4o-mini"
    assert request["authorization"] == "Bearer sk-summary"
    assert request["messages"][-1]["content"] == (f"Caller: {CALLER_WORDS}\nAgent: {AGENT_WORDS}")
    assert "Call the customer back" in page and "order has not arrived" in page
    assert stream.count("event: turn") == 2 and stream.rstrip().splitlines()[-2] == "event: ended"


@pytest.mark.parametrize("turns", ["server_vad", "manual"])
async def test_a_third_party_transcription_endpoint_through_settings_alone(
    base_env: dict[str, str], turns: str
) -> None:
    """OPE.AI's shape: its own URL with `?intent=transcription`, a Bearer key, the beta
    header and `transcription_session.update`; model ids with slashes. With
    `TRANSCRIBE_TURNS=manual` turn detection is off and the bridge commits each turn."""
    fake = FakeRealtime(
        dialect="beta", texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS}
    )
    async with fake:
        settings = settings_from(
            {
                **base_env,
                "REALTIME_URL": "wss://api-platform.ope.ai/v1/realtime",
                "REALTIME_MODEL": "opeai/AudioLLM/Voice2",
                "REALTIME_API_KEY": "sk-speech",
                "CALL_MODE": "transcribe",
                "FORWARD_TO": "sip:desk@example.com",
                "TRANSCRIBE_URL": fake.url + "?intent=transcription",
                "TRANSCRIBE_DIALECT": "beta",
                "TRANSCRIBE_API_KEY": "sk-ope",
                "TRANSCRIBE_MODEL": "opeai/transcribe",
                "TRANSCRIBE_LANGUAGE": "en",
                "TRANSCRIBE_TURNS": turns,
            }
        )
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=app.secret,
                say=speech_at(CALLER_HZ, 0.4, 1.0, 4.0),
                agent=speech_at(AGENT_HZ, 2.0, 1.0, 4.0),
                duration_s=4.0,
            )
            call = await ended_call(settings, result.call_sid)
    assert "<Sip>sip:desk@example.com</Sip>" in result.twiml
    assert len(fake.connections) == 2
    for conn in fake.connections:
        assert conn.path == "/v1/realtime?intent=transcription"
        assert conn.headers["authorization"] == "Bearer sk-ope"
        assert conn.headers["openai-beta"] == "realtime=v1"
        opening = conn.events[0]
        assert opening["type"] == "transcription_session.update"
        session = opening["session"]
        assert session["input_audio_format"] == "g711_ulaw"  # type: ignore[index]
        assert session["input_audio_transcription"] == {  # type: ignore[index]
            "model": "opeai/transcribe",
            "language": "en",
        }
        if turns == "manual":
            assert session["turn_detection"] is None  # type: ignore[index]
            assert conn.of_type("input_audio_buffer.commit")
        else:
            assert session["turn_detection"]["type"] == "server_vad"  # type: ignore[index]
    said = [(t["speaker"], t["text"]) for t in call["turns"]]
    assert said == [("caller", CALLER_WORDS), ("agent", AGENT_WORDS)]
    assert call["turns"][0]["started_ms"] == pytest.approx(400, abs=100)


async def test_a_bots_call_can_be_transcribed_beside_the_model(base_env: dict[str, str]) -> None:
    """`TRANSCRIBE_AI_CALLS`: the caller's audio and the bot's, as played, each go to a
    transcription session of their own; the lines are `transcript` events of the call."""
    fake = FakeRealtime(
        answer=pcm16_tone(AGENT_HZ, 1.0, dbfs=-10),
        texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS},
        vad_threshold_rms=1500,
    )
    async with fake:
        settings = settings_from(
            {
                **base_env,
                "REALTIME_URL": fake.url,
                "BOT_GREETING": "Hi",
                "TRANSCRIBE_AI_CALLS": "true",
            }
        )
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=app.secret,
                say=speech_at(CALLER_HZ, 2.0, 1.0, 4.5),
                duration_s=4.5,
            )
            call = await ended_call(settings, result.call_sid)
    assert result.bytes_played >= 8000  # the greeting reached the phone
    transcription = [c for c in fake.connections if "intent=transcription" in c.path]
    assert len(transcription) == 2 and len(fake.connections) == 3
    lines = [
        (e["data"]["speaker"], e["data"]["text"])
        for e in call["events"]
        if e["kind"] == "transcript"
    ]
    assert ("assistant", AGENT_WORDS) in lines and ("caller", CALLER_WORDS) in lines
    greeting = next(e for e in call["events"] if e["kind"] == "transcript")
    assert greeting["data"]["speaker"] == "assistant"  # the greeting came first


async def test_one_deployment_serves_a_bot_line_and_a_human_line(base_env: dict[str, str]) -> None:
    """`TRANSCRIBE_LINES` routes by the called number: the support line is put through to a
    Twilio client and transcribed (in PCM16 here); every other number gets the bot."""
    fake = FakeRealtime(texts_by_pitch={CALLER_HZ: CALLER_WORDS, AGENT_HZ: AGENT_WORDS})
    async with fake:
        settings = settings_from(
            {
                **base_env,
                "REALTIME_URL": fake.url,
                "TRANSCRIBE_LINES": "+15550100002=client:support_desk,+15550100003=+15550004444",
                "TRANSCRIBE_AUDIO": "pcm16",
            }
        )
        async with run_app(settings) as app:
            status, bot_twiml = await fetch_twiml(
                app.url, app.secret, new_call_sid(), form={"To": "+15550100009"}
            )
            assert status == 200 and "<Connect>" in bot_twiml and "<Dial" not in bot_twiml
            result = await simulate(
                app.url,
                auth_token=app.secret,
                to_number="+15550100002",
                say=speech_at(CALLER_HZ, 0.4, 1.0, 4.0),
                agent=speech_at(AGENT_HZ, 2.0, 1.0, 4.0),
                duration_s=4.0,
            )
            call = await ended_call(settings, result.call_sid)
    assert '<Dial answerOnBridge="true"><Client>support_desk</Client></Dial>' in result.twiml
    transcription = [c for c in fake.connections if "intent=transcription" in c.path]
    assert len(transcription) == 2
    for conn in transcription:
        session = conn.events[0]["session"]
        assert session["audio"]["input"]["format"] == {  # type: ignore[index]
            "type": "audio/pcm",
            "rate": 24000,
        }
        assert conn.audio_format == "pcm16" and len(conn.input_audio) > 24000 * 2 * 3
    said = [(t["speaker"], t["text"]) for t in call["turns"]]
    assert said == [("caller", CALLER_WORDS), ("agent", AGENT_WORDS)]
