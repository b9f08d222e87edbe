"""Known calls written straight into a call log, for review, API and CLI tests."""

from __future__ import annotations

import datetime as dt
import wave
from pathlib import Path

from bot.store.calls import CallRecords, LogBatch

T0 = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
ORDER_CALL = "CA" + "1" * 32
CUT_CALL = "CA" + "2" * 32


def turn(
    call: str, item: str, speaker: str, start: int, end: int, text: str, **extra: object
) -> dict[str, object]:
    return {
        "call_sid": call,
        "item_id": item,
        "speaker": speaker,
        "started_ms": start,
        "ended_ms": end,
        "text": text,
        "heard_text": extra.get("heard_text"),
        "interrupted": bool(extra.get("interrupted", False)),
        "latency_ms": extra.get("latency_ms"),
    }


def write_recording(recordings: Path) -> Path:
    recordings.mkdir(parents=True, exist_ok=True)
    recording = recordings / f"{ORDER_CALL}.wav"
    with wave.open(str(recording), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0\0\0" * 8000)
    return recording


async def seed(store: CallRecords, recordings: Path, fillers: int = 0) -> None:
    recording = write_recording(recordings)
    batch = LogBatch()
    batch.calls.append(
        (
            ORDER_CALL,
            {
                "direction": "inbound",
                "from_number": "+15551230001",
                "to_number": "+15559870002",
                "started_at": T0,
                "answered_at": T0 + dt.timedelta(seconds=1),
                "ended_at": T0 + dt.timedelta(seconds=40),
                "ended_by": "caller",
                "end_reason": "caller hung up",
                "twilio_status": "completed",
                "twilio_duration_s": 41,
                "provider": "api.openai.com",
                "model": "gpt-realtime",
                "dialect": "ga",
                "audio_mode": "pcm16",
                "recording_path": str(recording),
            },
        )
    )
    batch.increments.append(
        (ORDER_CALL, {"input_tokens": 120, "output_tokens": 80, "total_tokens": 200})
    )
    batch.turns += [
        turn(ORDER_CALL, "u1", "caller", 1200, 3100, "Hi, where is my order 4417?"),
        turn(
            ORDER_CALL,
            "a1",
            "assistant",
            3900,
            7600,
            "Order 4417 shipped yesterday and arrives Friday.",
            latency_ms=810,
        ),
    ]
    batch.turns += [
        turn(ORDER_CALL, "u2", "caller", 8900, 10400, "Can I change the delivery address?"),
        turn(
            ORDER_CALL,
            "a2",
            "assistant",
            11000,
            12900,
            "Of course. First I need to confirm it is you, so please tell me the postcode "
            "on the order and the name it was placed under.",
            heard_text="Of course. First I need to confirm it is you,",
            interrupted=True,
            latency_ms=590,
        ),
        turn(ORDER_CALL, "u3", "caller", 12800, 14100, "It's 90210, Dana Smith."),
        turn(
            ORDER_CALL,
            "a3",
            "assistant",
            14900,
            17800,
            "Thanks Dana, the address is updated.",
            latency_ms=640,
        ),
    ]
    batch.increments.append((ORDER_CALL, {"interruptions": 1}))
    batch.events.append(
        {
            "call_sid": ORDER_CALL,
            "at_ms": 3500,
            "kind": "tool",
            "detail": 'get_order_status({"order_id": "4417"}) → {"status": "shipped"}',
            "data": {
                "name": "get_order_status",
                "arguments": '{"order_id": "4417"}',
                "result": '{"found": true, "status": "shipped", "eta": "Friday"}',
                "error": None,
                "duration_ms": 12,
            },
            "created_at": T0,
        }
    )
    batch.events.append(
        {
            "call_sid": ORDER_CALL,
            "at_ms": 12900,
            "kind": "interruption",
            "detail": "caller spoke over the bot; heard 1900 of 6200 ms",
            "data": None,
            "created_at": T0,
        }
    )
    batch.events.append(
        {
            "call_sid": ORDER_CALL,
            "at_ms": 8200,
            "kind": "dtmf",
            "detail": "5",
            "data": None,
            "created_at": T0,
        }
    )
    batch.calls.append(
        (
            CUT_CALL,
            {
                "direction": "outbound-api",
                "from_number": "+15559870002",
                "to_number": "+15557770003",
                "started_at": T0 + dt.timedelta(days=1),
                "answered_at": T0 + dt.timedelta(days=1, seconds=2),
                "ended_at": T0 + dt.timedelta(days=1, seconds=20),
                "ended_by": "realtime",
                "end_reason": "Realtime socket closed with code 1011",
                "model": "gpt-realtime",
            },
        )
    )
    batch.increments.append((CUT_CALL, {"interruptions": 1, "errors": 1}))
    batch.turns += [
        turn(
            CUT_CALL,
            "a9",
            "assistant",
            500,
            2100,
            "Hello, this is Acme calling about your appointment tomorrow at ten.",
            heard_text="Hello, this is Acme calling",
            interrupted=True,
            latency_ms=None,
        ),
        turn(CUT_CALL, "u9", "caller", 2000, 3300, "Sorry, who is this?"),
    ]
    batch.events += [
        {
            "call_sid": CUT_CALL,
            "at_ms": 2100,
            "kind": "interruption",
            "detail": "caller spoke over the bot; heard 1600 of 4100 ms",
            "data": None,
            "created_at": T0,
        },
        {
            "call_sid": CUT_CALL,
            "at_ms": 9000,
            "kind": "error",
            "detail": "Realtime socket closed with code 1011",
            "data": None,
            "created_at": T0,
        },
    ]
    for i in range(fillers):
        sid = f"CA{i:032d}"
        batch.calls.append(
            (
                sid,
                {
                    "direction": "inbound",
                    "from_number": f"+1555000{i:04d}",
                    "to_number": "+15559870002",
                    "started_at": T0 - dt.timedelta(minutes=i + 1),
                },
            )
        )
        batch.turns.append(turn(sid, "u", "caller", 0, 900, f"filler call {i}"))
    await store.write(batch)
