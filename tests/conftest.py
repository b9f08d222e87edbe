from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from quart import Quart

from bot.bridge import CallRegistry
from bot.config import Secret, Settings
from bot.server import bind_socket, hypercorn_config
from bot.web import create_app

TEST_KEY = "sk-test-SECRET-KEY-0123456789"
LOCAL_SECRET = "local-test-secret-abcdef"


@dataclass
class RunningApp:
    url: str
    app: Quart
    registry: CallRegistry
    settings: Settings
    secret: str


@asynccontextmanager
async def run_app(settings: Settings) -> AsyncIterator[RunningApp]:
    """The real app, served by Hypercorn on an ephemeral loopback port."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    if settings.public_url is not None:
        settings = dataclasses.replace(settings, public_url=f"http://127.0.0.1:{port}")
    settings = dataclasses.replace(settings, port=port)
    secret = settings.twilio_auth_token.reveal() if settings.twilio_auth_token else LOCAL_SECRET
    app = create_app(settings, signing_secret=secret)
    registry: CallRegistry = app.extensions["bot.registry"]
    stop = asyncio.Event()
    server = asyncio.create_task(
        hypercorn_serve(app, hypercorn_config(sock), shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)
    try:
        yield RunningApp(url, app, registry, settings, secret)
    finally:
        registry.end_all_calls("test over")
        stop.set()
        await asyncio.wait_for(server, 10)


@pytest.fixture
def base_settings(tmp_path: Path) -> Settings:
    return Settings(
        realtime_api_key=Secret(TEST_KEY),
        data_dir=tmp_path,
        realtime_connect_timeout_s=2.0,
        transcription_model="gpt-4o-mini-transcribe",
    )
