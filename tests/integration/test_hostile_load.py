"""Issue 9's hostile load: while one legitimate call streams, another process sends, round
after round, huge unsigned forms, 256 MB and 16 MB frames, junk sockets, and signed calls
with bad timestamps and over-long parameters. The legitimate call must not notice."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.codec import pcm16_to_ulaw
from bot.simulator import simulate
from tests.audio_tools import tone
from tests.conftest import ended_call
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.hostile import MB, rss_bytes
from tests.processes import bot_server, clean_env

ROOT = Path(__file__).resolve().parents[2]
CALL_S = 9.0
ANSWER_S = 6.0


def _largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"DATABASE_URL": request.getfixturevalue("postgres_url")}


async def test_one_call_streams_through_a_hostile_load(
    tmp_path: Path, database: dict[str, str]
) -> None:
    extra = {"RECORD_AUDIO": "true", "FORWARD_DTMF": "false", **database}
    async with FakeRealtime(
        answer=pcm16_tone(700, ANSWER_S),
        answer_text="Your order ships today.",
        caller_texts=("Where is my order",),
        auto_respond=True,
        delta_ms=20,
        speed=1.0,  # the answer streams in real time, so a stalled bridge shows as a gap
    ) as fake:
        env = clean_env(tmp_path, PORT="0", REALTIME_URL=fake.url, **extra)
        env["REALTIME_API_KEY"] = "sk-test-hostile-load"
        gc.freeze()  # this process plays the phone and the model: its own pauses are noise
        async with bot_server(env, tmp_path) as (process, url, lines):
            secret = (tmp_path / "data" / "local-secret").read_text().strip()
            question = pcm16_to_ulaw(tone(600, 0.8, 8000, dbfs=-10))
            call = asyncio.create_task(
                simulate(url, auth_token=secret, say=question, duration_s=CALL_S, dtmf=[(7.0, "5")])
            )
            await asyncio.sleep(1.0)  # the call is up: every lazy part of the server is loaded
            before = rss_bytes(process.pid, peak=True)
            attack_from = time.monotonic()
            attacker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.hostile",
                url,
                str(CALL_S - 2.0),
                cwd=ROOT,
                env={**os.environ, "HOSTILE_SECRET": secret},
                stdout=asyncio.subprocess.PIPE,
            )
            result = await call
            gc.unfreeze()
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
            grown = rss_bytes(process.pid, peak=True) - before
            settings = Settings.from_env(env)
            row = await ended_call(settings, result.call_sid)
    rounds = int(out.split()[0])
    assert rounds >= 5, out
    assert attacker.returncode == 0
    # The legitimate call, as the phone and the model saw it.
    legit = fake.connections[0]
    assert len(legit.appended_at) == result.frames_sent  # every frame reached the model
    # Throughout the attack: the gaps between frames reaching the model and the phone, and
    # each frame's time from the phone's send to the model's receipt (what the bridge added).
    during = [
        (sent, arrived)
        for sent, arrived in zip(result.frames_sent_at, legit.appended_at, strict=True)
        if sent >= attack_from
    ]
    # A gap the phone itself caused (this process paused before a send) is not the
    # bridge's: each gap at the model is counted less the phone's own lateness.
    inbound_gap = max(
        (b_at - a_at) - max(0.0, (b_sent - a_sent) - 0.02)
        for (a_sent, a_at), (b_sent, b_at) in zip(during, during[1:], strict=False)
    )
    phone_gap = _largest_gap([sent for sent, _ in during])
    latency = max(arrived - sent for sent, arrived in during)
    received = result.media_received_at
    # Likewise a gap the model caused (this process sent a delta late) is not the bridge's:
    # each delta is one media message, so each gap at the phone is counted less the
    # model's own lateness.
    delta_sent = [
        at
        for name, at in zip(legit.sent, legit.sent_at, strict=True)
        if name.endswith(".delta") and "audio" in name and "transcript" not in name
    ]
    assert len(delta_sent) == len(received)  # one media message per delta, none dropped
    paired = [(s, r) for s, r in zip(delta_sent, received, strict=True) if r >= attack_from]
    outbound_gap = max(
        (b_at - a_at) - max(0.0, (b_sent - a_sent) - 0.02)
        for (a_sent, a_at), (b_sent, b_at) in zip(paired, paired[1:], strict=False)
    )
    log = "".join(lines)
    assert "Traceback" not in log, log[-3000:]
    assert inbound_gap < 0.1, f"inbound gap {inbound_gap * 1000:.0f} ms (phone {phone_gap:.3f} s)"
    assert latency < 0.1, f"a caller frame took {latency * 1000:.0f} ms through the bridge"
    assert outbound_gap < 0.1, f"outbound gap {outbound_gap * 1000:.0f} ms"
    assert received[-1] - received[0] > ANSWER_S - 1.0  # the whole answer was streamed
    assert result.frames_sent == int(CALL_S * 50)
    assert grown < 64 * MB, f"RSS grew by {grown / MB:.0f} MB"
    # Logged completely.
    assert (row["ended_by"], row["end_reason"]) == ("caller", "caller hung up")
    caller, bot = row["turns"]  # (the DTMF is not forwarded: no second answer)
    assert (caller["speaker"], caller["text"]) == ("caller", "Where is my order")
    assert (bot["speaker"], bot["text"]) == ("assistant", "Your order ships today.")
    assert not bot["interrupted"]
    assert [e["detail"] for e in row["events"] if e["kind"] == "dtmf"] == ["5"]
    assert row["recording_path"] and Path(row["recording_path"]).stat().st_size > 0
