from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from quart import Quart
from uvicorn import Config as uvicorn_config

from bot.app import call_services, create_app
from bot.call.registry import CallRegistry
from bot.config import Settings
from bot.server import AppServer, bind_socket, server_config

TEST_KEY = "sk-test-SECRET-KEY-0123456789"
LOCAL_SECRET = "local-test-secret-abcdef"


@dataclass
class RunningApp:
    url: str
    app: Quart
    registry: CallRegistry
    settings: Settings
    secret: str

    async def calls_done(self, timeout_s: float = 5.0) -> None:
        """Until every call has ended and been written up."""
        await asyncio.wait_for(self.registry.wait_idle(), timeout_s)


@asynccontextmanager
async def run_app(
    settings: Settings, *, plain_asgi: bool = False, **app_options: Any
) -> AsyncIterator[RunningApp]:
    """The real app, served as `bot serve` serves it (uvicorn, the media socket on picows),
    on an ephemeral loopback port; or, with `plain_asgi`, as any ASGI server would (uvicorn
    as it comes: the media socket over ASGI)."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    where = dataclasses.replace(settings.server, port=port)
    if where.public_url is not None:
        where = dataclasses.replace(where, public_url=f"http://127.0.0.1:{port}")
    settings = dataclasses.replace(settings, server=where)
    token = settings.twilio.auth_token
    secret = token.reveal() if token else LOCAL_SECRET
    app = create_app(settings, signing_secret=secret, **app_options)
    config = server_config(app)
    if plain_asgi:
        config = uvicorn_config(app, lifespan="on", log_config=None, ws="websockets-sansio")
    uvicorn = AppServer(config)
    server = asyncio.create_task(uvicorn.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{port}"
    await wait_for_http(url + "/healthz", server)
    registry = call_services(app).registry
    try:
        yield RunningApp(url, app, registry, settings, secret)
    finally:
        registry.end_all_calls("test over")
        await asyncio.wait_for(registry.wait_idle(), 5)
        uvicorn.should_exit = True
        await asyncio.wait_for(server, 10)


async def wait_for_http(url: str, server: asyncio.Task[Any] | None = None) -> None:
    """Until `url` answers 200; fails at once if the server task ends, or after 10 s."""
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while True:
            if server is not None and server.done():
                server.result()  # raises what stopped it
                raise AssertionError(f"the server stopped before {url} answered")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within 10 s")
            await asyncio.sleep(0.01)


async def eventually(
    condition: Callable[[], object], timeout_s: float = 5.0, what: str = "the condition"
) -> None:
    """Wait until `condition()` is true: a fixed sleep either wastes time or flakes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """The variables of a bridge that talks to a (fake) hosted model."""
    return {
        "REALTIME_API_KEY": TEST_KEY,
        "LOCAL_REALTIME_KEY": TEST_KEY,  # what clients of /v1/realtime present
        "BOT_DATA_DIR": str(tmp_path),
        "REALTIME_CONNECT_TIMEOUT": "2",
        "REALTIME_TRANSCRIPTION_MODEL": "gpt-4o-mini-transcribe",
    }


@pytest.fixture
def base_settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env(base_env)


def settings_from(env: dict[str, str], **more: str) -> Settings:
    """Settings from a test's variables plus a few more."""
    return Settings.from_env({**env, **more})


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
def database_env(request: pytest.FixtureRequest, base_env: dict[str, str]) -> dict[str, str]:
    """The base variables, with the call log on SQLite or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return base_env
    url: str = request.getfixturevalue("postgres_url")
    return {**base_env, "DATABASE_URL": url}


@pytest.fixture
def database_settings(database_env: dict[str, str]) -> Settings:
    return Settings.from_env(database_env)


async def stored_call(settings: Settings, call_sid: str) -> dict[str, Any]:
    """A call as the call log holds it, read through a store of its own."""
    from bot.store.store import Store

    store = await Store.open(settings.calllog.database)
    try:
        call = await store.calls.get_call(call_sid)
    finally:
        await store.close()
    assert call is not None, f"{call_sid} is not in the call log"
    return call


async def ended_call(settings: Settings, call_sid: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The call's row once a server in another process has written its end (its writer
    flushes a few times a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            row = await stored_call(settings, call_sid)
            if row["ended_by"] is not None:
                return row
        except AssertionError:  # not in the log yet
            pass
        assert time.monotonic() < deadline, f"{call_sid} was not logged as ended"
        await asyncio.sleep(0.2)


async def review_page_and_metrics(app_url: str, call_sid: str, password: str) -> tuple[str, str]:
    """The call's review page, signed in with `password`, and `/metrics`."""
    # The default jar ignores cookies of IP-address hosts such as 127.0.0.1.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        login = {"password": password, "next": "/calls"}
        async with http.post(app_url + "/login", data=login) as response:
            assert response.status == 200
        async with http.get(f"{app_url}/calls/{call_sid}") as response:
            page = await response.text()
        async with http.get(app_url + "/metrics") as response:
            metrics = await response.text()
    return page, metrics
