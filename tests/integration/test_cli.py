"""The real `bot` command in a subprocess: start-up checks, local mode, simulate, SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from bot.config import load_local_secret
from bot.simulator import simulate
from tests.conftest import TEST_KEY, eventually
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.processes import bot_server, clean_env, run_bot


async def test_config_errors_are_reported_together(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        TWILIO_AUTH_TOKEN="tok-SECRET",
        PORT="eighty",
        REALTIME_DIALECT="v3",
        REALTIME_AUDIO="opus",
        REALTIME_API_KEY="sk-SECRET",
    )
    code, _, err = await run_bot("serve", env=env, cwd=tmp_path)
    assert code == 2
    for name in ("PUBLIC_URL", "PORT", "REALTIME_DIALECT", "REALTIME_AUDIO"):
        assert name in err
    assert "SECRET" not in err


async def test_settings_come_from_a_dotenv_file_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REALTIME_AUDIO=flac\nVAD_SILENCE_MS=5\n")
    code, _, err = await run_bot("serve", env=clean_env(tmp_path), cwd=tmp_path)
    assert code == 2
    assert "REALTIME_AUDIO" in err and "VAD_SILENCE_MS" in err


BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


async def test_the_benchmark_prints_its_tables(tmp_path: Path) -> None:
    bench = BENCH
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(bench),
        "--rounds",
        "2",
        "--seconds",
        "0.2",
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert "| ours (FIR) |" in out and "| pass-through |" in out
    assert re.search(r"alias rejection 5-11 kHz \(worst\) \| (\d+\.\d) dB \| 0\.0 dB", out)
    assert "identical output whatever the chunking | yes" in out


async def test_local_mode_serves_on_loopback_and_simulate_reads_its_secret(tmp_path: Path) -> None:
    async with FakeRealtime(answer=pcm16_tone(1000, 0.5), vad_threshold_rms=1e9) as fake:
        env = clean_env(
            tmp_path,
            PORT="0",
            HOST="0.0.0.0",
            REALTIME_URL=fake.url,
            REALTIME_API_KEY=TEST_KEY,
            BOT_GREETING="Hello!",
        )
        async with bot_server(env, tmp_path) as (process, url, lines):
            log = "".join(lines)
            assert "local mode" in log and "HOST=0.0.0.0 ignored" in log
            assert (tmp_path / "data" / "local-secret").stat().st_mode & 0o777 == 0o600
            record = tmp_path / "heard.wav"
            code, out, err = await run_bot(
                "simulate", url, "--duration", "1.5", "--record", str(record), env=env, cwd=tmp_path
            )
            assert code == 0, err
            assert re.search(r"webhook\s+HTTP 200", out)
            assert re.search(r"received\s+4000 B", out)
            assert record.stat().st_size > 44
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
        assert TEST_KEY not in "".join(lines)


def answering(fake: FakeRealtime) -> bool:
    return bool(fake.connections) and bool(fake.connections[0].of_type("response.create"))


def refused(url: str) -> bool:
    """The server no longer accepts connections."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), 0.2):
            return False
    except OSError:
        return True


async def test_sigterm_lets_active_calls_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    async with FakeRealtime(answer=pcm16_tone(700, 4.0), vad_threshold_rms=1e9) as fake:
        env = clean_env(
            tmp_path,
            PORT="0",
            REALTIME_URL=fake.url,
            REALTIME_API_KEY=TEST_KEY,
            BOT_GREETING="Hi",
            SHUTDOWN_GRACE_SECONDS="10",
        )
        async with bot_server(env, tmp_path) as (process, url, lines):
            token = load_local_secret(tmp_path / "data", create=False)
            call = asyncio.create_task(simulate(url, auth_token=token, duration_s=3.0))
            await eventually(lambda: answering(fake), what="the call being answered")
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await eventually(lambda: refused(url), what="new connections being refused")
            result = await call
            assert result.close_code == 1000 and result.duration_s >= 2.9
            assert result.bytes_received == 32000  # the whole 4 s answer arrived
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert time.monotonic() - signalled < 6


async def test_calls_still_running_after_the_grace_period_are_ended_politely(
    tmp_path: Path,
) -> None:
    async with FakeRealtime(answer=pcm16_tone(700, 1.0), vad_threshold_rms=1e9) as fake:
        env = clean_env(
            tmp_path,
            PORT="0",
            REALTIME_URL=fake.url,
            REALTIME_API_KEY=TEST_KEY,
            SHUTDOWN_GRACE_SECONDS="0.5",
        )
        async with bot_server(env, tmp_path) as (process, url, lines):
            token = load_local_secret(tmp_path / "data", create=False)
            call = asyncio.create_task(simulate(url, auth_token=token, duration_s=20))
            await eventually(lambda: bool(fake.connections), what="the call connecting")
            process.send_signal(signal.SIGTERM)
            result = await asyncio.wait_for(call, 10)
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert result.close_code == 1000 and result.duration_s < 3, "".join(lines)
        assert "server shutting down" in "".join(lines)


async def test_a_busy_port_is_a_clear_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(tmp_path, PORT=str(port), REALTIME_URL="ws://127.0.0.1:9/v1/realtime")
        code, _, err = await run_bot("serve", env=env, cwd=tmp_path)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_call_log_that_cannot_be_opened_is_a_clear_message(
    tmp_path: Path, workers: str
) -> None:
    """Before: each worker's lifespan traceback, and a second worker stopped while starting
    failed with a KeyError of its own."""
    missing = f"bot_missing_{tmp_path.name[-12:].lower()}"
    env = clean_env(
        tmp_path,
        REALTIME_URL="ws://127.0.0.1:9/v1/realtime",
        DATABASE_URL=f"postgresql://postgres:not-logged@127.0.0.1:5432/{missing}",
        WORKERS=workers,
    )
    code, _, err = await run_bot("serve", env=env, cwd=tmp_path)
    assert code == 2
    assert f'DATABASE_URL: cannot open the call log: database "{missing}" does not exist' in err
    assert "Traceback" not in err and "not-logged" not in err


async def test_bot_simulate_plays_both_sides_of_a_listened_call(tmp_path: Path) -> None:
    from bot.simulator import write_wav
    from tests.integration.test_listen import speech_at

    fake = FakeRealtime(texts_by_pitch={300: "Is the shop open?", 700: "Yes, until six."})
    async with fake:
        env = clean_env(
            tmp_path,
            PORT="0",
            REALTIME_URL=fake.url,
            REALTIME_API_KEY=TEST_KEY,
            CALL_MODE="transcribe",
            FORWARD_TO="+15550009999",
        )
        write_wav(tmp_path / "caller.wav", speech_at(300, 0.3, 0.8, 3.0))
        write_wav(tmp_path / "agent.wav", speech_at(700, 1.6, 0.8, 3.0))
        async with bot_server(env, tmp_path) as (_, url, _):
            code, out, err = await run_bot(
                "simulate",
                url,
                "--say",
                "caller.wav",
                "--agent",
                "agent.wav",
                "--duration",
                "3.5",
                env=env,
                cwd=tmp_path,
            )
            await eventually(
                lambda: (
                    sum(
                        "conversation.item.input_audio_transcription.completed" in c.sent
                        for c in fake.connections
                    )
                    == 2
                ),
                what="both sides transcribed",
            )
    assert code == 0, err
    assert re.search(r"stream\s+a one-way fork of both tracks", out)
    assert re.search(r"received\s+0 B", out)  # nothing ever comes back on a fork
