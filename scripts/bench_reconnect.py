"""How long a caller hears silence when the Realtime session drops, through the bridge
under its real server, with the phone simulator and the fake Realtime server on loopback.

Three drop points, each `--rounds` times: during an answer (silence the phone plays after
the drop, before the next answer's audio), during the caller's speech (from the end of the
speech to the answer, against the same turn with no drop), and during a slow tool call
(from the drop to the answer). Prints medians and maxima in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_realtime import FakeRealtime, Scripted, pcm16_tone  # noqa: E402
from tests.integration.test_continuity import (  # noqa: E402
    ANSWER_TEXT,
    call_with,
    drop,
    eventually,
    quiet,
    silence_after,
    speech,
)

SEEDED: list[float] = []  # from losing a session to the new one seeded, per reconnect
ENV = {
    "REALTIME_API_KEY": "sk-bench",
    "LOCAL_REALTIME_KEY": "sk-bench",
    "REALTIME_CONNECT_TIMEOUT": "2",
    "LOG_LEVEL": "WARNING",
}


async def during_answer() -> float:
    fake = FakeRealtime(
        answer=pcm16_tone(500, 3.0),
        answer_text=ANSWER_TEXT,
        auto_respond=True,
        script=[Scripted(pcm16_tone(600, 0.6), "Hello there.")],
    )
    dropped = 0.0

    async def during() -> None:
        nonlocal dropped
        await eventually(
            lambda: (
                bool(fake.connections) and fake.connections[0].sent.count("response.created") == 2
            ),
            10,
            what="the answer",
        )
        await asyncio.sleep(1.1)
        dropped = drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake, _env(), quiet(1.2) + speech(0.8) + quiet(5.0), during, BOT_GREETING="Hi"
        )
    [event] = [e for e in result.row["events"] if e["kind"] == "reconnect"]  # type: ignore[attr-defined]
    SEEDED.append(event["data"]["gap_ms"] / 1000)
    return silence_after(result, dropped)


async def during_speech(drop_it: bool) -> float:
    fake = FakeRealtime(
        answer=pcm16_tone(500, 1.0),
        auto_respond=True,
        script=[Scripted(pcm16_tone(600, 0.4), "Hi.")],
    )

    async def during() -> None:
        await eventually(
            lambda: bool(fake.connections) and fake.connections[0].speech_started_at is not None,
            10,
            what="speech",
        )
        await asyncio.sleep(0.5)
        if drop_it:
            drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake, _env(), quiet(1.2) + speech(2.0) + quiet(4.0), during, BOT_GREETING="Hi"
        )
    return silence_after(result, result.frames_sent_at[0] + 3.2)


async def during_tool() -> float:
    greeting = Scripted(
        pcm16_tone(600, 0.3), "Let me check.", tool=("slow_lookup", '{"order_id": "4417"}')
    )
    fake = FakeRealtime(answer=pcm16_tone(500, 1.0), script=[greeting])
    dropped = 0.0

    async def during() -> None:
        nonlocal dropped
        await eventually(
            lambda: (
                bool(fake.connections)
                and "response.function_call_arguments.done" in fake.connections[0].sent
            ),
            10,
            what="the tool call",
        )
        await asyncio.sleep(0.4)
        dropped = drop(fake.connections[0])

    async with fake:
        result, started = await call_with(
            fake, _env(), quiet(5.0), during, BOT_GREETING="Hi", BOT_TOOLS="tests.slow_tools"
        )
    return silence_after(result, dropped)


def _env() -> dict[str, str]:
    return {**ENV, "BOT_DATA_DIR": tempfile.mkdtemp(prefix="bench-reconnect-")}


async def main(rounds: int) -> None:
    cases = {
        "during an answer: drop → next answer audio": lambda: during_answer(),
        "during caller speech: end of speech → answer, with the drop": lambda: during_speech(True),
        "during caller speech: end of speech → answer, no drop": lambda: during_speech(False),
        "during a tool call (1 s tool, drop 0.4 s in): drop → answer": lambda: during_tool(),
    }
    print("| case | median | max |")
    print("|---|---|---|")
    for name, case in cases.items():
        gaps = [await case() for _ in range(rounds)]
        print(f"| {name} | {statistics.median(gaps) * 1000:.0f} ms | {max(gaps) * 1000:.0f} ms |")
    print(
        f"| the bridge's part: session lost → new one seeded | "
        f"{statistics.median(SEEDED) * 1000:.0f} ms | {max(SEEDED) * 1000:.0f} ms |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
