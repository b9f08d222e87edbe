"""Hostile and broken input against the real server: each finding of issue 9, reproduced.

Every test here failed on the code before its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TEST_KEY
from tests.hostile import MB, form_body, huge_form, huge_frame, rss_bytes
from tests.processes import bot_server, clean_env

HOSTED = {"REALTIME_URL": "ws://127.0.0.1:9/v1/realtime", "REALTIME_API_KEY": TEST_KEY}


async def test_huge_websocket_frames_cost_no_memory(tmp_path: Path) -> None:
    env = clean_env(tmp_path, PORT="0", **HOSTED)
    async with bot_server(env, tmp_path) as (process, url, _):
        media = url.replace("http", "ws") + "/twilio/media"
        before = rss_bytes(process.pid, peak=True)
        await huge_frame(media, 256 * MB)
        await asyncio.gather(*(huge_frame(media, 16 * MB) for _ in range(80)))
        grown = rss_bytes(process.pid, peak=True) - before
    assert grown < 64 * MB, f"RSS grew by {grown // MB} MB"


async def _worst_pause(url: str, during: asyncio.Task[object]) -> float:
    """The longest `/healthz` takes while `during` runs: how long the event loop froze."""
    worst = 0.0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz"):
            pass  # the first request warms the connection and the app's lazy parts
        while not during.done():
            started = loop.time()
            async with http.get(url + "/healthz") as response:
                assert response.status == 200
            worst = max(worst, loop.time() - started)
            await asyncio.sleep(0.02)
    return worst


@pytest.mark.parametrize("signature", [None, "x" * 28, "Zm9yZ2VkLXNpZ25hdHVyZS0wMDA="])
async def test_a_huge_unsigned_form_never_blocks_the_loop(
    tmp_path: Path, signature: str | None
) -> None:
    """1.5 million fields, 15 MB: refused before the body is read, the loop never waits."""
    env = clean_env(tmp_path, PORT="0", **HOSTED)
    body = form_body()
    async with bot_server(env, tmp_path) as (_, url, _):
        attack = asyncio.create_task(huge_form(url + "/twilio/voice", body, signature))
        worst = await _worst_pause(url, attack)
        answered_after = await attack
    assert answered_after < 1.0, f"answered after {answered_after:.1f} s"
    assert worst < 0.1, f"/healthz waited {worst:.2f} s"
