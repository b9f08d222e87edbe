"""A call outlives its Realtime session: reconnects with the heard conversation, renewal at
a turn boundary, and idle callers. In memory: the real session, loop and call log, with a
scripted model per session."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.call.core.prompt import say_request
from bot.call.loop import serve_stream
from bot.call.tools import tool_from_function
from bot.core.realtime import events as rt
from bot.errors import RealtimeUnavailable
from bot.example_tools import get_order_status
from tests import memory
from tests.conftest import eventually
from tests.memory import CALL_SID, MemoryCall, ScriptedModel, memory_call
from tests.unit.test_call_loop import answer, done, running, stored

SILENCE, SPEECH = b"\xff" * 160, b"\x10" * 160


@pytest.fixture(autouse=True, params=[False, True], ids=["pumps", "direct"])
def delivery(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test twice: events through the pumps, and delivered directly as on picows."""
    monkeypatch.setattr(memory, "DIRECT", request.param)


def seeded(model: ScriptedModel) -> list[tuple[str | None, str]]:
    """(role or item type, text or call id) of the items created in a session, in order."""
    items = []
    for event in model.of_type(rt.CreateItem):
        assert isinstance(event, rt.CreateItem)
        item = event.item
        if item.type == "message":
            items.append((item.role, item.text))
        else:
            items.append((item.type, item.call_id or ""))
    return items


async def converse(call: MemoryCall) -> None:
    """One exchange: the caller asks, the bot answers in full, and the caller heard it."""
    phone, model = call.phone, call.model
    phone.speak(5, SPEECH)
    model.say(rt.SpeechStarted(0, "user_1"))
    model.say(
        rt.SpeechStopped(100, "user_1"), rt.InputTranscriptCompleted("user_1", "Where is my order?")
    )
    model.say(*answer(b"\x7f" * 1600, "resp_1", "item_1"))
    model.say(rt.TranscriptDone("resp_1", "item_1", "It ships today."), *done("resp_1", "item_1"))
    await eventually(lambda: phone.marks(), what="the answer reaching the phone")
    phone.ack()
    phone.speak(1, SILENCE)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) >= 6, what="the acks")


async def test_a_drop_during_an_answer_seeds_what_was_heard_and_the_model_carries_on(
    tmp_path: Path,
) -> None:
    call, task = await running(tmp_path)
    phone = call.phone
    await converse(call)
    model = call.model
    # A second answer: 400 ms reach the phone, 100 ms of it played, with its transcript.
    model.say(
        rt.ResponseCreated(rt.ResponseInfo("resp_2", "in_progress")),
        rt.OutputItemAdded("resp_2", 0, rt.Item("item_2", "message", role="assistant")),
        rt.TranscriptDelta("resp_2", "item_2", "First part. "),
        rt.AudioDelta("resp_2", "item_2", b"\x7f" * 800),
        rt.TranscriptDelta("resp_2", "item_2", "Second part never heard."),
        rt.AudioDelta("resp_2", "item_2", b"\x7f" * 2400),
    )
    await eventually(lambda: len(phone.marks()) >= 2, what="the second answer playing")
    phone.ack(1)
    phone.speak(1, SILENCE)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) >= 7, what="the ack")
    model.drop("Realtime socket connection lost")
    await eventually(lambda: len(call.models) == 2, what="a new session")
    new = call.latest
    await eventually(lambda: new.of_type(rt.CreateResponse), what="the model asked to go on")
    assert phone.clears() == 1  # the unheard rest of the answer is not played
    assert seeded(new) == [
        ("user", "Where is my order?"),
        ("assistant", "It ships today."),
        ("assistant", "First part."),
    ]
    [create] = new.of_type(rt.CreateResponse)
    assert isinstance(create, rt.CreateResponse) and create.speak is True
    assert model.closed and not task.done()
    phone.hang_up()
    await asyncio.wait_for(task, 2)
    row = await stored(call)
    [event] = [e for e in row["events"] if e["kind"] == "reconnect"]  # type: ignore[union-attr]
    assert event["data"]["attempts"] == 1
    assert row["ended_by"] == "caller" and row["errors"] == 0


async def test_a_drop_during_caller_speech_hands_the_speech_to_the_new_session(
    tmp_path: Path,
) -> None:
    call, task = await running(tmp_path)
    phone, model = call.phone, call.model
    phone.speak(60, SILENCE)
    phone.speak(10, SPEECH)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 70, what="the audio")
    model.say(rt.SpeechStarted(400, "user_1"))
    await eventually(lambda: model.drained, what="the model's event handled")
    phone.speak(10, SPEECH)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 80, what="more speech")
    model.drop("Realtime socket closed with code 1011: keepalive ping timeout")
    await eventually(lambda: len(call.models) == 2, what="a new session")
    phone.speak(5, SPEECH)
    new = call.latest
    await eventually(lambda: len(new.of_type(rt.AppendAudio)) >= 2, what="audio in the new one")
    appended = [e.audio for e in new.of_type(rt.AppendAudio) if isinstance(e, rt.AppendAudio)]
    # A second of lead-in, all the speech since, then the live audio.
    assert appended[0] == SILENCE * 40 + SPEECH * 20
    assert not new.of_type(rt.CreateResponse)  # the caller is still speaking: VAD decides
    phone.hang_up()
    await asyncio.wait_for(task, 2)
    await stored(call)


async def test_a_drop_during_a_tool_call_seeds_the_call_and_its_output(tmp_path: Path) -> None:
    slow_started = asyncio.Event()
    release = asyncio.Event()

    async def slow_lookup(order_id: str) -> dict[str, str]:
        """Look an order up, slowly."""
        slow_started.set()
        await release.wait()
        return await get_order_status(order_id)

    call = await memory_call(tmp_path, tools={"slow_lookup": tool_from_function(slow_lookup)})
    call.phone.start(time.time())
    task = asyncio.create_task(serve_stream(call.phone, call.services))
    model = call.model
    model.say(
        rt.ResponseCreated(rt.ResponseInfo("resp_1", "in_progress")),
        rt.FunctionCallArguments("resp_1", "fc_1", "call_1", "slow_lookup", '{"order_id": "4417"}'),
        rt.ResponseDone(rt.ResponseInfo("resp_1", "completed")),
    )
    await asyncio.wait_for(slow_started.wait(), 2)
    model.drop("Realtime socket connection lost")
    await eventually(lambda: len(call.models) == 2, what="a new session")
    new = call.latest
    await eventually(lambda: seeded(new), what="the seed")
    assert seeded(new) == [("function_call", "call_1")]
    assert not new.of_type(rt.CreateResponse)  # the tool is still running
    release.set()
    await eventually(lambda: new.of_type(rt.CreateResponse), what="the model carrying on")
    assert seeded(new) == [("function_call", "call_1"), ("function_call_output", "call_1")]
    call.phone.hang_up()
    await asyncio.wait_for(task, 2)
    await stored(call)


async def test_a_rejected_reconnect_ends_the_call_politely(tmp_path: Path) -> None:
    call, task = await running(tmp_path)
    call.dial_failures.append(RealtimeUnavailable("HTTP 401 (check the API key)", rejected=True))
    call.model.drop("Realtime socket connection lost")
    await asyncio.wait_for(task, 2)
    assert call.phone.closed_with == 1000  # Twilio speaks the fallback
    row = await stored(call)
    assert row["ended_by"] == "realtime"
    assert "reconnecting refused" in str(row["end_reason"])


async def test_a_provider_that_stays_down_ends_the_call_within_the_wait(tmp_path: Path) -> None:
    call, task = await running(tmp_path, REALTIME_RECONNECT_S="1")
    call.dial_failures.extend(RealtimeUnavailable("connection refused") for _ in range(20))
    started = time.monotonic()
    call.model.drop("Realtime socket connection lost")
    await asyncio.wait_for(task, 3)
    assert time.monotonic() - started < 1.5
    assert call.phone.closed_with == 1000
    row = await stored(call)
    assert row["ended_by"] == "realtime" and "no new session within 1 s" in str(row["end_reason"])


async def test_session_expired_is_a_reconnect_not_an_end(tmp_path: Path) -> None:
    call, task = await running(tmp_path)
    await converse(call)
    call.model.say(
        rt.ErrorEvent(
            "session_expired",
            "Your session hit the maximum duration of 60 minutes.",
            "invalid_request_error",
        )
    )
    await eventually(lambda: len(call.models) == 2 and seeded(call.latest), what="a new session")
    assert call.model.closed
    assert seeded(call.latest) == [("user", "Where is my order?"), ("assistant", "It ships today.")]
    call.phone.hang_up()
    await asyncio.wait_for(task, 2)
    await stored(call)


async def test_renewal_waits_for_a_turn_boundary_and_swaps_without_a_cut(tmp_path: Path) -> None:
    call, task = await running(tmp_path, REALTIME_SESSION_MAX_S="0.3")
    phone, model = call.phone, call.model
    await converse(call)
    # An answer is playing when the session comes of age: no swap until it has played.
    model.say(*answer(b"\x7f" * 1600, "resp_2", "item_2"))
    await eventually(lambda: phone.marks(), what="the answer playing")
    await asyncio.sleep(0.6)
    assert len(call.models) == 2 and not seeded(call.latest)  # open, waiting
    model.say(rt.TranscriptDone("resp_2", "item_2", "Anything else?"), *done("resp_2", "item_2"))
    phone.ack()
    phone.speak(1, SILENCE)
    new = call.models[1]
    await eventually(lambda: seeded(new), what="the swap")
    assert seeded(new)[-1] == ("assistant", "Anything else?")
    await eventually(lambda: model.closed, what="the old session closing")
    phone.speak(3, SILENCE)
    await eventually(lambda: len(new.of_type(rt.AppendAudio)) == 3, what="audio to the new one")
    assert phone.clears() == 0  # nothing was cut
    phone.hang_up()
    await asyncio.wait_for(task, 2)
    row = await stored(call)
    assert [e["kind"] for e in row["events"]].count("renewal") >= 1  # type: ignore[union-attr]


async def test_a_silent_caller_is_asked_then_hung_up_on(tmp_path: Path) -> None:
    call, task = await running(tmp_path, IDLE_PROMPT_S="1", IDLE_PROMPTS="2")
    phone, model = call.phone, call.model

    def asked() -> list[str]:
        return [
            e.instructions or ""
            for e in model.of_type(rt.CreateResponse)
            if isinstance(e, rt.CreateResponse)
        ]

    phone.speak(49, SILENCE)  # 980 ms of call time
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 49, what="the audio")
    assert not asked()
    phone.speak(2, SILENCE)
    await eventually(asked, what="the first prompt")
    assert asked() == [say_request("Are you still there?")]
    for number in (2, 3):
        model.say(*answer(b"\x7f" * 160, f"resp_{number}", f"item_{number}"))
        model.say(*done(f"resp_{number}", f"item_{number}"))
        await eventually(lambda: phone.marks(), what="the prompt playing")
        phone.ack()
        # A second of call time after the ack; the clock ran on a little while the test
        # waited for it (the shell's clock between frames), so a few frames more.
        phone.speak(60, SILENCE)
        await eventually(lambda n=number: len(asked()) == n, what=f"prompt {number}")
    assert asked()[-1] == say_request(
        "I haven't heard from you, so I'll end the call now. Goodbye."
    )
    assert not task.done()  # the goodbye must play first
    model.say(*answer(b"\x7f" * 160, "resp_4", "item_4"), *done("resp_4", "item_4"))
    await eventually(lambda: phone.marks(), what="the goodbye playing")
    phone.ack()
    phone.speak(1, SILENCE)
    await asyncio.wait_for(task, 2)
    row = await stored(call)
    kinds = [e["kind"] for e in row["events"]]  # type: ignore[union-attr]
    assert kinds.count("idle_prompt") == 2 and kinds.count("idle_goodbye") == 1
    assert (row["ended_by"], row["end_reason"]) == ("bot", "hung up: the caller stayed silent")


async def test_speech_resets_the_idle_prompts(tmp_path: Path) -> None:
    call, task = await running(tmp_path, IDLE_PROMPT_S="1")
    phone, model = call.phone, call.model
    phone.speak(40, SILENCE)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 40, what="the audio")
    model.say(rt.SpeechStarted(700, "user_1"), rt.SpeechStopped(790, "user_1"))
    await eventually(lambda: model.drained, what="the model's events handled")
    phone.speak(1, SILENCE)
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 41, what="the events")
    phone.speak(30, SILENCE)  # 0.6 s after the speech, and the answer it expects
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 71, what="more audio")
    assert not model.of_type(rt.CreateResponse)
    phone.hang_up()
    await asyncio.wait_for(task, 2)
    assert CALL_SID not in call.services.registry.calls
    await stored(call)
