"""The whole call loop in memory: a scripted model and a phone on in-memory channels, the
real session, loop, journal and call log (SQLite). No socket is opened."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bot.call.loop import serve_stream
from bot.call.tools import tool_from_function
from bot.core.realtime import events as rt
from bot.example_tools import get_order_status
from tests import memory
from tests.conftest import eventually
from tests.memory import CALL_SID, MemoryCall, memory_call

RESPONSE, ITEM = "resp_1", "item_1"


@pytest.fixture(autouse=True, params=[False, True], ids=["pumps", "direct"])
def delivery(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test twice: events through the pumps, and delivered directly as on picows."""
    monkeypatch.setattr(memory, "DIRECT", request.param)


def answer(audio: bytes, response: str = RESPONSE, item: str = ITEM) -> list[rt.ServerEvent]:
    """The start of a spoken answer: created, its item, and its audio."""
    return [
        rt.ResponseCreated(rt.ResponseInfo(response, "in_progress")),
        rt.OutputItemAdded(response, 0, rt.Item(item, "message", role="assistant")),
        rt.AudioDelta(response, item, audio),
    ]


def done(
    response: str = RESPONSE, item: str = ITEM, status: str = "completed"
) -> list[rt.ServerEvent]:
    return [rt.AudioDone(response, item), rt.ResponseDone(rt.ResponseInfo(response, status))]


async def running(tmp_path: Path, **env: str) -> tuple[MemoryCall, asyncio.Task[None]]:
    call = await memory_call(tmp_path, **env)
    call.phone.start(time.time())
    task = asyncio.create_task(serve_stream(call.phone, call.services))
    await eventually(lambda: CALL_SID in call.services.registry.calls, what="the call starting")
    return call, task


async def stored(call: MemoryCall) -> dict[str, object]:
    await call.services.call_log.flush()
    row = await call.store.calls.get_call(CALL_SID)
    await call.store.close()
    assert row is not None
    return row


async def test_barge_in_clears_the_phone_and_truncates_at_what_it_played(tmp_path: Path) -> None:
    call, task = await running(tmp_path, INTERRUPTIONS="instant")
    phone, model = call.phone, call.model
    # One second of μ-law in ten deltas: ten media messages, each with its mark.
    model.say(*answer(b"\x7f" * 800))
    model.say(*(rt.AudioDelta(RESPONSE, ITEM, b"\x7f" * 800) for _ in range(9)))
    await eventually(lambda: len(phone.marks()) == 10, what="the answer reaching the phone")
    phone.ack(2)  # the phone played 200 ms
    phone.speak()
    await eventually(lambda: len(model.of_type(rt.AppendAudio)) == 1, what="the ack and audio")
    model.say(rt.SpeechStarted(200, "user_1"))
    await eventually(lambda: phone.clears() == 1, what="Twilio's buffer being cleared")
    # 200 ms acknowledged, plus the time the third message has been playing since: the call
    # clock runs on between frames (this test takes a few ms from the ack to the barge-in).
    [truncate] = model.of_type(rt.TruncateItem)
    assert isinstance(truncate, rt.TruncateItem) and truncate.item_id == ITEM
    assert 200 <= truncate.audio_end_ms <= 250
    sent = len(phone.sent)
    model.say(rt.AudioDelta(RESPONSE, ITEM, b"\x7f" * 800))  # late: the server races the cancel
    model.say(*done(status="cancelled"))
    phone.hang_up()
    await asyncio.wait_for(task, 2)
    assert len(phone.sent) == sent  # nothing of the interrupted answer after the clear
    row = await stored(call)
    assert row["interruptions"] == 1 and row["ended_by"] == "caller"


async def test_a_tool_round_trip(tmp_path: Path) -> None:
    call = await memory_call(
        tmp_path, tools={"get_order_status": tool_from_function(get_order_status)}
    )
    call.phone.start(time.time())
    task = asyncio.create_task(serve_stream(call.phone, call.services))
    model = call.model
    model.say(
        rt.ResponseCreated(rt.ResponseInfo(RESPONSE, "in_progress")),
        rt.FunctionCallArguments(
            RESPONSE, "fc_1", "call_1", "get_order_status", '{"order_id": "4417"}'
        ),
    )
    await eventually(lambda: model.of_type(rt.CreateItem), what="the tool's result")
    [output] = model.of_type(rt.CreateItem)
    assert isinstance(output, rt.CreateItem) and output.item.call_id == "call_1"
    assert json.loads(output.item.output)["status"] == "shipped"
    assert not model.of_type(rt.CreateResponse)  # the asking response is still active
    model.say(rt.ResponseDone(rt.ResponseInfo(RESPONSE, "completed")))
    await eventually(lambda: model.of_type(rt.CreateResponse), what="the model carrying on")
    call.phone.hang_up()
    await asyncio.wait_for(task, 2)
    row = await stored(call)
    [tool] = [e for e in row["events"] if e["kind"] == "tool"]  # type: ignore[union-attr]
    assert tool["data"]["name"] == "get_order_status" and tool["data"]["error"] is None


async def test_operator_actions_reach_a_call_on_this_instance(tmp_path: Path) -> None:
    call, task = await running(tmp_path)
    cluster = call.services.cluster
    assert await cluster.control(CALL_SID, "say", "Your table is ready") == "here"

    def said() -> bool:
        return any(
            isinstance(e, rt.CreateResponse) and (e.instructions or "").endswith("table is ready")
            for e in call.model.of_type(rt.CreateResponse)
        )

    await eventually(said, what="the words asked of the model")
    assert await cluster.control("CA" + "9" * 32, "hang_up") == "not live"
    assert await cluster.control(CALL_SID, "hang_up") == "here"
    await asyncio.wait_for(task, 2)
    row = await stored(call)
    assert (row["ended_by"], row["end_reason"]) == ("bot", "hung up: asked through the API")


async def test_end_call_waits_for_the_last_mark(tmp_path: Path) -> None:
    call, task = await running(tmp_path)
    phone, model = call.phone, call.model
    model.say(*answer(b"\x7f" * 800), rt.AudioDelta(RESPONSE, ITEM, b"\x7f" * 800))  # 200 ms
    model.say(
        rt.FunctionCallArguments(RESPONSE, "fc_1", "call_1", "end_call", '{"reason": "done"}')
    )
    model.say(*done())
    await eventually(lambda: len(phone.marks()) == 2, what="the goodbye reaching the phone")
    await eventually(lambda: model.of_type(rt.CreateItem), what="the tool being answered")
    phone.ack(1)
    phone.speak()  # a frame after the acks: they have been handled
    await eventually(lambda: model.of_type(rt.AppendAudio), what="the frame arriving")
    assert not task.done() and phone.closed_with is None  # one mark still playing
    phone.ack()
    await asyncio.wait_for(task, 2)
    assert phone.closed_with == 1000
    row = await stored(call)
    assert (row["ended_by"], row["end_reason"]) == ("bot", "hung up: done")


@pytest.mark.parametrize("at_start", [True, False])
async def test_with_reconnects_off_a_realtime_close_ends_the_call_politely(
    tmp_path: Path, at_start: bool
) -> None:
    call, task = await running(tmp_path, REALTIME_RECONNECT_S="0")
    if not at_start:
        call.model.say(*answer(b"\x7f" * 800))
        await eventually(lambda: call.phone.marks(), what="audio reaching the phone")
    call.model.drop("Realtime socket closed with code 1011: server error")
    await asyncio.wait_for(task, 2)
    assert call.phone.closed_with == 1000  # Twilio then speaks the fallback
    assert call.model.closed
    assert not call.services.registry.calls
    row = await stored(call)
    assert row["ended_by"] == "realtime"
    assert row["end_reason"] == "Realtime socket closed with code 1011: server error"
    assert row["errors"] == 1


async def test_direct_delivery_handles_a_frame_at_once_and_defers_what_it_cannot(
    tmp_path: Path,
) -> None:
    """On picows a media frame is handled in the socket's callback: its append is written
    before `speak` returns. A frame whose commands need more than a write (here: the
    session is gone and reconnects are off) leaves them to a task, and the call ends as
    the pump would have ended it."""
    if not memory.DIRECT:
        pytest.skip("direct delivery only")
    call, task = await running(tmp_path, REALTIME_RECONNECT_S="0")
    phone, model = call.phone, call.model
    await eventually(lambda: phone.drained, what="the call waiting for a frame")
    phone.speak()
    assert len(model.of_type(rt.AppendAudio)) == 1  # no await in between: handled at once
    model.closed = True  # the next write finds the session gone
    phone.speak()
    await asyncio.wait_for(task, 2)
    assert phone.closed_with == 1000
    row = await stored(call)
    assert (row["ended_by"], row["end_reason"]) == ("realtime", "closed")
