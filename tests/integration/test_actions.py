"""Outbound calls and in-call actions against a fake Twilio REST API and the fake Realtime."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bot.config import Settings
from bot.core.codec import pcm16_to_ulaw
from bot.outbound.core.request import Caller, OutboundCall
from bot.outbound.placing import place_call
from bot.simulator import SimulationResult, simulate
from bot.store.store import Store
from bot.twilio_rest import TwilioRest
from tests.audio_tools import tone
from tests.conftest import RunningApp, eventually, run_app, settings_from, stored_call
from tests.fake_realtime import FakeRealtime, Scripted, pcm16_tone
from tests.fake_twilio import FakeTwilio

ACCOUNT = "AC" + "5" * 32
TOKEN = "twilio-token-for-actions-0000"


@pytest.fixture
def twilio_env(base_env: dict[str, str]) -> dict[str, str]:
    return {
        **base_env,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": "+15550009999",
        "PUBLIC_URL": "http://127.0.0.1:0",  # run_app fills in the real port
    }


async def test_an_outbound_call_is_requested_exactly(base_settings: Settings) -> None:
    caller = Caller("+15550009999", "https://bot.example.com")
    async with FakeTwilio(ACCOUNT, TOKEN) as twilio:
        rest = TwilioRest(ACCOUNT, TOKEN, twilio.url)
        store = await Store.open(base_settings.calllog.database)
        try:
            call_sid = await place_call(
                caller,
                rest,
                store.calls,
                OutboundCall("+15551234567", {"name": "Dana", "time": "3 pm"}, "Remind {name}."),
            )
            with pytest.raises(ValueError, match="E.164"):
                await place_call(caller, rest, store.calls, OutboundCall("555-1234"))
            logged = await store.calls.get_call(call_sid)
        finally:
            await rest.close()
            await store.close()
    [request] = twilio.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
    assert (request.user, request.password) == (ACCOUNT, TOKEN)
    form = dict(request.form)
    url = form.pop("Url")
    assert form == {
        "To": ["+15551234567"],
        "From": ["+15550009999"],
        "Method": ["POST"],
        "StatusCallback": ["https://bot.example.com/twilio/status"],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "MachineDetection": ["DetectMessageEnd"],
        "AsyncAmd": ["true"],
        "AsyncAmdStatusCallback": ["https://bot.example.com/twilio/amd"],
        "AsyncAmdStatusCallbackMethod": ["POST"],
    }
    [webhook] = url
    parts = urlsplit(webhook)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://bot.example.com/twilio/voice"
    assert parse_qs(parts.query) == {
        "var_name": ["Dana"],
        "var_time": ["3 pm"],
        "instructions": ["Remind {name}."],
        "amd": ["1"],
    }
    assert logged is not None and logged["direction"] == "outbound-api"
    assert logged["to_number"] == "+15551234567" and logged["twilio_status"] == "queued"


async def test_end_call_hangs_up_after_the_goodbye_has_played(twilio_env: dict[str, str]) -> None:
    goodbye = Scripted(
        pcm16_tone(600, 1.0),
        "Thanks for calling, goodbye!",
        ("end_call", '{"reason": "caller is done"}'),
    )
    async with (
        FakeTwilio(ACCOUNT, TOKEN) as twilio,
        FakeRealtime(script=[goodbye], vad_threshold_rms=1e9) as fake,
    ):
        settings = settings_from(
            twilio_env, REALTIME_URL=fake.url, TWILIO_API_URL=twilio.url, BOT_GREETING="Hi"
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=TOKEN, account_sid=ACCOUNT, duration_s=5)
            await eventually(lambda: not app.registry.calls, what="the call ending")
    [hang_up] = twilio.of("POST", f"/Calls/{result.call_sid}.json")
    assert hang_up.form == {"Status": ["completed"]}
    last_played = result.mark_acked_at[-1]
    assert result.bytes_played == 8000  # the whole goodbye
    assert 0 <= hang_up.at - last_played < 0.5  # after the last mark, not before
    assert result.duration_s < 2.5  # and the call did end
    call = await stored_call(settings, result.call_sid)
    assert (call["ended_by"], call["end_reason"]) == ("bot", "hung up: caller is done")
    [tool] = [e for e in call["events"] if e["kind"] == "tool"]
    assert tool["data"]["name"] == "end_call" and json.loads(tool["data"]["arguments"]) == {
        "reason": "caller is done"
    }
    # The model heard that the tool worked and was told to say no more.
    [output] = [
        e
        for e in fake.connections[0].events
        if e.get("item", {}).get("type") == "function_call_output"
    ]
    assert json.loads(output["item"]["output"])["ok"] is True


async def test_a_caller_who_already_hung_up_is_not_an_error(
    twilio_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    goodbye = Scripted(pcm16_tone(600, 0.3), "Bye!", ("end_call", "{}"))
    async with (
        FakeTwilio(ACCOUNT, TOKEN, callers_hang_up_first=True) as twilio,
        FakeRealtime(script=[goodbye], vad_threshold_rms=1e9) as fake,
    ):
        settings = settings_from(
            twilio_env, REALTIME_URL=fake.url, TWILIO_API_URL=twilio.url, BOT_GREETING="Hi"
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=TOKEN, account_sid=ACCOUNT, duration_s=3)
            await eventually(lambda: not app.registry.calls, what="the call ending")
    assert twilio.of("POST", f"/Calls/{result.call_sid}.json")
    assert "the call had already ended" in caplog.text
    call = await stored_call(settings, result.call_sid)
    assert call["errors"] == 0 and call["ended_by"] == "bot"


async def test_transfer_redirects_the_call_to_a_person(twilio_env: dict[str, str]) -> None:
    handoff = Scripted(
        pcm16_tone(600, 0.5), "Let me connect you.", ("transfer_call", '{"reason": "billing"}')
    )
    async with (
        FakeTwilio(ACCOUNT, TOKEN) as twilio,
        FakeRealtime(script=[handoff], vad_threshold_rms=1e9) as fake,
    ):
        settings = settings_from(
            twilio_env,
            REALTIME_URL=fake.url,
            TWILIO_API_URL=twilio.url,
            BOT_GREETING="Hi",
            TRANSFER_TO="+15550001111",
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=TOKEN, account_sid=ACCOUNT, duration_s=4)
            await eventually(lambda: not app.registry.calls, what="the call ending")
    update = fake.connections[0].of_type("session.update")[0]["session"]
    assert [t["name"] for t in update["tools"]] == ["end_call", "transfer_call"]
    [redirect] = twilio.of("POST", f"/Calls/{result.call_sid}.json")
    assert redirect.form == {
        "Twiml": [
            "<Response><Say>Please hold while I connect you.</Say>"
            "<Dial>+15550001111</Dial></Response>"
        ]
    }
    assert redirect.at >= result.mark_acked_at[-1]
    call = await stored_call(settings, result.call_sid)
    assert call["end_reason"] == "transferred to +15550001111"
    assert [e["detail"] for e in call["events"] if e["kind"] == "transfer"] == [
        "to +15550001111: billing"
    ]


def tool_module(tmp_path: Path) -> str:
    (tmp_path / "shop_tools.py").write_text(
        textwrap.dedent(
            '''
            from bot.example_tools import get_order_status as _lookup


            async def get_order_status(order_id: str) -> dict[str, object]:
                """Look up an order.

                Args:
                    order_id: The order number.
                """
                return await _lookup(order_id)


            async def refund(order_id: str) -> str:
                """Refund an order."""
                raise RuntimeError("payments system is down")
            '''
        )
    )
    sys.path.insert(0, str(tmp_path))
    return "shop_tools"


@pytest.mark.parametrize(
    ("tool", "arguments", "expect_in_output"),
    [
        ("get_order_status", '{"order_id": "4417"}', '"status": "shipped"'),
        ("refund", '{"order_id": "4417"}', '"error": "RuntimeError: payments system is down"'),
        ("get_order_status", '{"order": 1}', "bad arguments"),
    ],
)
async def test_custom_tools_answer_the_model_and_the_call_goes_on(
    base_env: dict[str, str], tmp_path: Path, tool: str, arguments: str, expect_in_output: str
) -> None:
    script = [
        Scripted(b"", "", (tool, arguments)),
        Scripted(pcm16_tone(700, 0.5), "Here is what I found."),
    ]
    async with FakeRealtime(script=script, vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi", BOT_TOOLS=tool_module(tmp_path)
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=app.secret, duration_s=2.0)
            await eventually(lambda: not app.registry.calls, what="the call ending")
    events = fake.connections[0].events
    tools = fake.connections[0].of_type("session.update")[0]["session"]["tools"]
    assert {t["name"] for t in tools} == {"end_call", "get_order_status", "refund"}
    [output] = [e for e in events if e.get("item", {}).get("type") == "function_call_output"]
    assert expect_in_output in output["item"]["output"]
    kinds = [e["type"] for e in events]
    assert kinds.index("response.create", kinds.index("conversation.item.create")) > 0
    assert result.bytes_received == 4000  # the follow-up answer played: the call went on
    call = await stored_call(settings, result.call_sid)
    [logged] = [e for e in call["events"] if e["kind"] == "tool"]
    assert logged["data"]["name"] == tool and logged["data"]["arguments"] == arguments
    assert expect_in_output in logged["data"]["result"]
    assert isinstance(logged["data"]["duration_ms"], int) and logged["data"]["duration_ms"] < 2000
    assert (logged["data"]["error"] is None) == (
        tool == "get_order_status" and "order_id" in arguments
    )


async def post_amd(app: RunningApp, call_sid: str, answered_by: str) -> None:
    url = app.url + "/twilio/amd"
    params = {"CallSid": call_sid, "AnsweredBy": answered_by, "MachineDetectionDuration": "2300"}
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, data=params, headers={"X-Twilio-Signature": signature}
        ) as response:
            assert response.status == 204


async def amd_call(
    env: dict[str, str], answered_by: str
) -> tuple[FakeTwilio, FakeRealtime, SimulationResult, Settings]:
    async with (
        FakeTwilio(ACCOUNT, TOKEN) as twilio,
        FakeRealtime(
            answer=pcm16_tone(600, 0.5), answer_text="Hi Dana!", vad_threshold_rms=1e9
        ) as fake,
    ):
        settings = settings_from(
            env, REALTIME_URL=fake.url, TWILIO_API_URL=twilio.url, BOT_GREETING="Hi, this is Acme."
        )
        async with run_app(settings) as app:
            hello = pcm16_to_ulaw(tone(500, 0.6, 8000))
            call = asyncio.create_task(
                simulate(
                    app.url,
                    auth_token=TOKEN,
                    account_sid=ACCOUNT,
                    say=hello,
                    duration_s=3.0,
                    direction="outbound-api",
                    webhook_query={
                        "amd": "1",
                        "var_name": "Dana",
                        "instructions": "Remind {name} of the visit.",
                    },
                )
            )
            await asyncio.sleep(1.0)  # the detection takes a while: the call is held meanwhile
            result_sid = next(iter(app.registry.calls))
            await post_amd(app, result_sid, answered_by)
            result = await call
            await eventually(lambda: not app.registry.calls, what="the call ending")
    return twilio, fake, result, settings


async def test_a_person_answering_gets_the_greeting_only_after_detection(
    twilio_env: dict[str, str],
) -> None:
    twilio, fake, result, _ = await amd_call(twilio_env, "human")
    conn = fake.connections[0]
    kinds = [e["type"] for e in conn.events]
    instructions = [e for e in conn.of_type("session.update") if "instructions" in e["session"]][-1]
    assert "Remind Dana of the visit." in instructions["session"]["instructions"]
    # Caller audio only reaches the model after the verdict (about 1 s of 3 s held back).
    assert 80 <= conn.frames_in <= 110
    assert kinds.index("response.create") < kinds.index("input_audio_buffer.append")
    assert result.bytes_received == 4000  # the greeting played
    assert not twilio.requests


async def test_a_machine_gets_the_voicemail_and_the_bot_stays_quiet(
    twilio_env: dict[str, str],
) -> None:
    env = {**twilio_env, "VOICEMAIL_MESSAGE": "Hi Dana, this is Acme. Please call us back."}
    twilio, fake, result, settings = await amd_call(env, "machine_end_beep")
    [redirect] = twilio.requests
    assert redirect.form == {
        "Twiml": [
            "<Response><Say>Hi Dana, this is Acme. Please call us back.</Say><Hangup/></Response>"
        ]
    }
    conn = fake.connections[0]
    assert not conn.of_type("response.create")
    assert not [e for e in conn.events if e["type"] == "input_audio_buffer.append"]
    call = await stored_call(settings, result.call_sid)
    assert call["answered_by"] == "machine_end_beep", call
    assert call["end_reason"] == "voicemail left"


async def test_keypad_digits_reach_the_model_as_text(base_env: dict[str, str]) -> None:
    async with FakeRealtime(answer=pcm16_tone(500, 0.3), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            result = await simulate(
                app.url, auth_token=app.secret, duration_s=1.5, dtmf=[(0.3, "1"), (0.9, "#")]
            )
    texts = [
        e["item"]["content"][0]["text"]
        for e in fake.connections[0].events
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "message"
    ]
    assert texts == [
        "[The caller pressed 1 on the phone keypad]",
        "[The caller pressed # on the phone keypad]",
    ]
    assert len(fake.connections[0].of_type("response.create")) == 2
    assert result.bytes_received == 2 * 2400  # the bot answered each


async def test_bot_call_and_a_broken_tool_module_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main
    from tests.processes import clean_env, run_bot

    async def bot_call(*args: str, **env: str) -> tuple[int, str, str]:
        """`bot call …`, in a thread with its own event loop, as the command line runs it."""
        code = await asyncio.to_thread(main, ["call", *args], {**environ, **env})
        out, err = capsys.readouterr()
        return code, out, err

    async with FakeTwilio(ACCOUNT, TOKEN) as twilio:
        environ = {
            "BOT_DATA_DIR": str(tmp_path / "data"),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": "+15550009999",
            "TWILIO_API_URL": twilio.url,
            "PUBLIC_URL": "https://bot.example.com",
        }
        code, out, err = await bot_call("+15551234567", "--var", "name=Dana")
        assert code == 0, err
        [created] = twilio.of("POST", "/Calls.json")
        assert out.strip() in twilio.calls and created.one("To") == "+15551234567"
        code, _, err = await bot_call("555-1234")
        assert code == 1 and "is not an E.164 number" in err
        assert len(twilio.of("POST", "/Calls.json")) == 1  # nothing placed
        code, _, err = await bot_call("+15551234567", TWILIO_FROM_NUMBER="")
        assert code == 2 and "TWILIO_FROM_NUMBER" in err
    # The real process, for a start-up failure: the message, the exit code, no traceback.
    env = clean_env(tmp_path, PORT="0", BOT_TOOLS="no_such_tools_module")
    code, _, err = await run_bot("serve", env=env, cwd=tmp_path)
    assert code == 2
    assert "BOT_TOOLS=no_such_tools_module: cannot import it" in err
    assert "Traceback" not in err
