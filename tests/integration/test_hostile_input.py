"""Hostile and broken input against the real server: each finding of issue 9, reproduced.

Every test here failed on the code before its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import TEST_KEY
from tests.hostile import MB, huge_frame, rss_bytes
from tests.processes import bot_server, clean_env


async def test_huge_websocket_frames_cost_no_memory(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, PORT="0", REALTIME_URL="ws://127.0.0.1:9/v1/realtime", REALTIME_API_KEY=TEST_KEY
    )
    async with bot_server(env, tmp_path) as (process, url, _):
        media = url.replace("http", "ws") + "/twilio/media"
        before = rss_bytes(process.pid, peak=True)
        await huge_frame(media, 256 * MB)
        await asyncio.gather(*(huge_frame(media, 16 * MB) for _ in range(80)))
        grown = rss_bytes(process.pid, peak=True) - before
    assert grown < 64 * MB, f"RSS grew by {grown // MB} MB"
