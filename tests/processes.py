"""The real `bot` command in subprocesses."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("TWILIO_", "OPENAI_", "REALTIME_", "BOT_", "PUBLIC_URL", "HOST", "PORT", "WORKERS")
        )
    }
    # One process unless a test asks for workers: its pid is the server's.
    env.update({"BOT_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", "WORKERS": "1"})
    env.update(extra)
    return env


async def run_bot(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@asynccontextmanager
async def bot_server(
    env: dict[str, str], cwd: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, list[str]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env=env,
        cwd=cwd,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    url = ""
    while not url:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, "server exited: " + "".join(lines)
        lines.append(line)
        if match := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
            url = match.group(1)

    async def drain() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            lines.append(raw.decode())

    reader = asyncio.create_task(drain())
    try:
        yield process, url, lines
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await reader
