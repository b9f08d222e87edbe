from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
async def run_app(settings: Settings, **app_options: Any) -> AsyncIterator[RunningApp]:
    """The real app, served by Hypercorn on an ephemeral loopback port."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    if settings.public_url is not None:
        settings = dataclasses.replace(settings, public_url=f"http://127.0.0.1:{port}")
    settings = dataclasses.replace(settings, port=port)
    secret = settings.twilio_auth_token.reveal() if settings.twilio_auth_token else LOCAL_SECRET
    app = create_app(settings, signing_secret=secret, **app_options)
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
    registry: CallRegistry = app.extensions["bot.registry"]
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


# ---- databases ---------------------------------------------------------------------------------

POSTGRES_ADMIN = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_accepts() -> bool:
    parts = urlsplit(POSTGRES_ADMIN)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A running PostgreSQL on loopback; started here if it is installed but stopped."""
    if not _postgres_accepts() and shutil.which("pg_ctlcluster"):
        for version in sorted(os.listdir("/etc/postgresql"), reverse=True):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
                capture_output=True,
            )
        for _ in range(50):
            if _postgres_accepts():
                break
            time.sleep(0.2)
    if not _postgres_accepts():
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN} and could not be started")
    return POSTGRES_ADMIN


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test."""
    import asyncpg

    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_settings(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    if request.param == "sqlite":
        return base_settings
    url: str = request.getfixturevalue("postgres_url")
    return dataclasses.replace(base_settings, database_url=url)


async def stored_call(settings: Settings, call_sid: str) -> dict[str, object]:
    """A call as the call log holds it, read through a store of its own."""
    from bot.storage import CallStore

    store = await CallStore.open(settings.database)
    try:
        call = await store.get_call(call_sid)
    finally:
        await store.close()
    assert call is not None, f"{call_sid} is not in the call log"
    return call
