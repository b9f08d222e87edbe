"""Many simulated calls against a real `bot serve`, with an echoing Realtime backend.

Three processes share the machine, and each one's CPU is reported:
  * the server under test, `bot serve`, with the hosted-provider code path;
  * an echo backend (this script with `--echo`): a Realtime server that answers each
    append with the same audio as a model delta, at once (`--delta-ms 100`: 100 ms at a
    time, for a model that streams longer deltas);
  * the phones (this script): `bot.simulator` calls, started 50 ms apart, each sending
    20 ms frames in real time and playing back what comes, acknowledging marks.

Figures, over the steady part of the run (every call connected):
  * server CPU per call, in % of one core;
  * phone→model latency, p50 and p99: each frame from the phone's send to the backend's
    receipt (CLOCK_MONOTONIC is one clock for every process);
  * audio delivered each way: frames the backend got of those the phones sent, and audio
    the phones got of what the backend sent;
  * the largest gap between consecutive frames at the backend and media at the phones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")
STAGGER_S = 0.05
FRAME_ULAW_BYTES = 160  # 20 ms at 8 kHz
FRAME_PCM16_BYTES = 960  # 20 ms at 24 kHz
DEPLOY_CADDYFILE = Path(__file__).resolve().parent.parent / "deploy" / "Caddyfile"
_CALL_TAG = re.compile(r"loadtest: (\d+)")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its finished children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU of a process and of its live children (the workers)."""
    total = process_cpu(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            for child in children.read_text().split():
                total += tree_cpu(int(child))
    return total


# ---- the echo backend ----------------------------------------------------------------------


async def echo_server(port_file: Path, results: Path, delta_frames: int) -> None:
    """Answer `input_audio_buffer.append`s with the same audio as output deltas: each
    append's audio as it comes, or gathered until `delta_frames` Twilio frames (20 ms each)
    are there. Arrivals are kept per 20 ms frame, so an append of two frames counts twice."""
    import base64

    import websockets

    arrivals: dict[str, list[float]] = {}
    sent: dict[str, list[tuple[float, int]]] = {}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(ws: websockets.ServerConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await serve_one(ws)

    async def serve_one(ws: websockets.ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {"id": "sess"}}))
        call = f"anonymous-{id(ws)}"
        ulaw = False
        started = False
        held: list[bytes] = []
        held_frames = 0
        async for raw in ws:
            now = time.monotonic()
            # Appends are nearly all the traffic: read their audio without a JSON parse.
            if isinstance(raw, str) and raw.startswith('{"type":"input_audio_buffer.append"'):
                audio = raw[raw.index('"audio":"') + 9 : raw.rindex('"')]
            else:
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "session.update":
                    session = event["session"]
                    if match := _CALL_TAG.search(str(session.get("instructions", ""))):
                        call = match.group(1)
                    fmt = json.dumps(session.get("audio", session.get("input_audio_format", "")))
                    ulaw = ulaw or "pcmu" in fmt or "g711_ulaw" in fmt
                    await ws.send(json.dumps({"type": "session.updated", "session": session}))
                if kind != "input_audio_buffer.append":
                    continue
                audio = event["audio"]
            size = len(audio) * 3 // 4 - audio[-2:].count("=")
            frames = max(1, size // (FRAME_ULAW_BYTES if ulaw else FRAME_PCM16_BYTES))
            arrivals.setdefault(call, []).extend([now] * frames)
            if not started:
                started = True
                for message in (
                    {"type": "response.created", "response": {"id": "r1", "status": "x"}},
                    {
                        "type": "response.output_item.added",
                        "response_id": "r1",
                        "output_index": 0,
                        "item": {"id": "i1", "type": "message", "role": "assistant"},
                    },
                ):
                    await ws.send(json.dumps(message))
            if held or frames < delta_frames:
                held.append(base64.b64decode(audio))
                held_frames += frames
                if held_frames < delta_frames:
                    continue
                audio = base64.b64encode(b"".join(held)).decode("ascii")
                held.clear()
                held_frames = 0
            await ws.send(
                '{"type":"response.output_audio.delta","response_id":"r1","item_id":"i1",'
                f'"output_index":0,"content_index":0,"delta":"{audio}"}}'
            )
            size = len(audio) * 3 // 4 - audio[-2:].count("=")
            sent.setdefault(call, []).append((time.monotonic(), size if ulaw else size // 6))

    async with websockets.serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        port_file.write_text(str(port))  # noqa: ASYNC240 (once, before any call)
        await stop.wait()
    results.write_text(json.dumps({"arrivals": arrivals, "sent": sent}))  # noqa: ASYNC240


# ---- the phones and the report ---------------------------------------------------------------


@dataclass
class Figures:
    label: str
    calls: int
    server_pct_per_call: float
    echo_pct: float
    phones_pct: float
    p50_ms: float
    p99_ms: float
    to_model_pct: float
    to_phone_pct: float
    inbound_gap_ms: float
    outbound_gap_ms: float

    def row(self) -> str:
        return (
            f"| {self.label} | {self.calls} | {self.server_pct_per_call:.2f} % | "
            f"{self.p50_ms:.1f} / {self.p99_ms:.1f} ms | {self.to_model_pct:.1f} % | "
            f"{self.to_phone_pct:.1f} % | {self.inbound_gap_ms:.0f} / {self.outbound_gap_ms:.0f} ms"
            f" | {self.echo_pct:.0f} % / {self.phones_pct:.0f} % |"
        )


HEADER = (
    "| path | calls | server CPU per call | phone→model p50 / p99 | delivered to model | "
    "delivered to phone | largest gap in / out | echo / phones CPU |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _start_server(
    command: list[str], env: dict[str, str], cwd: Path | None
) -> tuple[asyncio.subprocess.Process, str, asyncio.Task[None]]:
    server = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=cwd, stderr=asyncio.subprocess.PIPE
    )
    assert server.stderr is not None
    url = ""
    while not url:
        line = (await asyncio.wait_for(server.stderr.readline(), 60)).decode()
        if not line:
            raise SystemExit("the server did not start")
        if match := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
            url = match.group(1)
    while True:  # the app is up once uvicorn says so (workers log it too)
        line = (await asyncio.wait_for(server.stderr.readline(), 60)).decode()
        if not line or "startup complete" in line:
            break

    async def drain() -> None:
        assert server.stderr is not None
        async for raw in server.stderr:
            if b"ERROR" in raw or b"Traceback" in raw:
                sys.stderr.write(raw.decode())

    return server, url, asyncio.create_task(drain())


async def _start_caddy(
    work: Path, port: int, urls: list[str]
) -> tuple[asyncio.subprocess.Process, str]:
    """Caddy on loopback, round robin over the instances (the deployment's example)."""
    upstreams = " ".join(url.removeprefix("http://") for url in urls)
    config = DEPLOY_CADDYFILE
    caddy = await asyncio.create_subprocess_exec(
        *("caddy", "run", "--config", str(config), "--adapter", "caddyfile"),
        env={
            **os.environ,
            "BOT_SITE": f"http://127.0.0.1:{port}",
            "BOT_INSTANCES": upstreams,
            "HOME": str(work),
            "XDG_DATA_HOME": str(work),
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return caddy, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("caddy did not start")


def _largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def run(
    calls: int,
    seconds: float,
    audio: str,
    workers: int,
    server_tree: Path | None = None,
    profile: Path | None = None,
    delta_ms: int = 20,
    append_ms: int | None = None,
    database: str | None = None,
    instances: int = 1,
) -> Figures:
    from bot.simulator import SimulationResult, simulate

    with tempfile.TemporaryDirectory(prefix="loadtest-") as scratch:
        work = Path(scratch)
        port_file, results = work / "echo-port", work / "echo.json"
        echo = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--echo", str(port_file), str(results), str(delta_ms // 20)
        )
        while not port_file.exists() or not port_file.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "OPENAI_", "REALTIME_", "BOT_", "DATABASE_URL"))
        }
        env.update(
            {
                "BOT_DATA_DIR": str(work / "data"),
                "PORT": "0",
                "REALTIME_URL": f"ws://127.0.0.1:{port_file.read_text()}/v1/realtime",
                "REALTIME_API_KEY": "sk-loadtest",
                "REALTIME_AUDIO": audio,
                "REALTIME_TRANSCRIPTION_MODEL": "",
                "MAX_CALLS": str(max(calls, 1)),
                "LOG_LEVEL": "INFO",  # the "listening on" line
                "PYTHONUNBUFFERED": "1",
            }
        )
        # WORKERS, not --workers: an older checkout (--compare) ignores what it does not know.
        env["WORKERS"] = str(workers)
        if append_ms is not None:
            env["AUDIO_APPEND_MS"] = str(append_ms)
        command = [sys.executable, "-m", "bot", "serve"]
        if database:
            env["DATABASE_URL"] = database
        if server_tree is not None:  # another checkout's server, for a before/after
            env["PYTHONPATH"] = str(server_tree)
        front = None
        if instances > 1:  # behind Caddy: webhooks are signed for its address
            front_port = _free_port()
            env["PUBLIC_URL"] = f"http://127.0.0.1:{front_port}"
        servers, urls, drains = [], [], []
        for _ in range(instances):  # one after the other: the first writes the local secret
            server, url, draining = await _start_server(command, env, server_tree)
            servers.append(server)
            urls.append(url)
            drains.append(draining)
        if instances > 1:
            front, url = await _start_caddy(work, front_port, urls)
        secret = (work / "data" / "local-secret").read_text().strip()

        async def phone(n: int) -> SimulationResult:
            await asyncio.sleep(n * STAGGER_S)
            return await simulate(
                url,
                auth_token=secret,
                duration_s=seconds,
                webhook_query={"var_loadtest": str(n), "instructions": "loadtest: {loadtest}"},
            )

        tasks = [asyncio.create_task(phone(n)) for n in range(calls)]
        # Steady state: every call has started, none has ended.
        ramp = calls * STAGGER_S + 1.0
        await asyncio.sleep(ramp)
        window = max(1.0, seconds - 2.0 - calls * STAGGER_S)

        def servers_cpu() -> float:
            spent = sum(tree_cpu(server.pid) for server in servers)
            return spent + (process_cpu(front.pid) if front is not None else 0.0)

        server_before, echo_before = servers_cpu(), process_cpu(echo.pid)
        phones_before, wall_before = time.process_time(), time.monotonic()
        spy = None
        if profile is not None:  # py-spy's collapsed stacks of the server's steady window
            spy = await asyncio.create_subprocess_exec(
                "py-spy",
                "record",
                "--pid",
                str(servers[0].pid),
                "--subprocesses",
                "--rate",
                "250",
                "--duration",
                str(int(window)),
                "--format",
                "raw",
                "--output",
                str(profile),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        await asyncio.sleep(window)
        server_spent = servers_cpu() - server_before
        echo_spent = process_cpu(echo.pid) - echo_before
        phones_spent = time.process_time() - phones_before
        wall = time.monotonic() - wall_before
        phones = await asyncio.gather(*tasks)
        if spy is not None:
            await spy.wait()
        echo.send_signal(signal.SIGTERM)
        await echo.wait()
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            await asyncio.wait_for(server.wait(), 60)
        for draining in drains:
            draining.cancel()
        if front is not None:
            front.terminate()
            await front.wait()
        data = json.loads(results.read_text())

    latencies: list[float] = []
    to_model = to_phone = sent_frames = sent_by_echo = 0
    inbound_gap = outbound_gap = 0.0
    steady_from, steady_to = wall_before, wall_before + wall
    for n, result in enumerate(phones):
        arrived = data["arrivals"].get(str(n), [])
        echoed = data["sent"].get(str(n), [])
        sent_frames += result.frames_sent
        to_model += len(arrived)
        # The echoes of the last frames cross the phone's hang-up: the phone must have
        # got everything echoed up to 100 ms before its last frame.
        last_frame = result.frames_sent_at[-1] if result.frames_sent_at else 0.0
        expected = sum(size for at, size in echoed if at < last_frame - 0.1)
        sent_by_echo += expected
        to_phone += min(expected, sum(result.media_received_bytes))
        steady = [
            (sent, at)
            for sent, at in zip(result.frames_sent_at, arrived, strict=False)
            if steady_from <= sent <= steady_to
        ]
        latencies += [at - sent for sent, at in steady]
        inbound_gap = max(inbound_gap, _largest_gap([at for _, at in steady]))
        received = [at for at in result.media_received_at if steady_from <= at <= steady_to]
        outbound_gap = max(outbound_gap, _largest_gap(received))
    latencies.sort()
    label = "PCM16, transcoded" if audio == "pcm16" else "μ-law, passed through"
    label += ", each append echoed" if delta_ms <= 20 else f", {delta_ms} ms deltas"
    if append_ms is not None:
        label += f", {append_ms} ms appends"
    if server_tree is not None:
        label += f" ({server_tree.name})"
    if workers > 1:
        label += f", {workers} workers"
    if instances > 1:
        label += f", {instances} instances behind Caddy (its CPU counted)"
    return Figures(
        label=label,
        calls=calls,
        server_pct_per_call=100 * server_spent / wall / calls,
        echo_pct=100 * echo_spent / wall,
        phones_pct=100 * phones_spent / wall,
        p50_ms=1000 * statistics.median(latencies) if latencies else float("nan"),
        p99_ms=1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        to_model_pct=100 * to_model / max(1, sent_frames),
        to_phone_pct=100 * to_phone / max(1, sent_by_echo),
        inbound_gap_ms=1000 * inbound_gap,
        outbound_gap_ms=1000 * outbound_gap,
    )


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """uvloop for the echo and the phones too: they share the machine with the server."""
    import uvloop

    return uvloop.run(main)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--echo":
        run_event_loop(echo_server(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--audio", choices=["pcm16", "g711_ulaw"], nargs="+", default=["pcm16", "g711_ulaw"]
    )
    parser.add_argument(
        "--delta-ms",
        type=int,
        nargs="+",
        default=[20],
        help="the echo's model deltas: 20 answers each append at once; 100 gathers 100 ms",
    )
    parser.add_argument(
        "--append-ms",
        type=int,
        nargs="+",
        default=[None],
        help="the server's AUDIO_APPEND_MS (default: its own default)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="servers behind Caddy (deploy/Caddyfile), sharing --database",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="the server's DATABASE_URL (PostgreSQL, which several workers need)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="CHECKOUT",
        help="also run the server of another checkout, interleaved with this one's",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="py-spy's collapsed stacks of the server (needs py-spy on PATH)",
    )
    args = parser.parse_args()
    trees: list[Path | None] = [None] if args.compare is None else [args.compare, None]
    print(HEADER, flush=True)
    for audio in args.audio:
        for delta_ms, append_ms in itertools.product(args.delta_ms, args.append_ms):
            for calls in args.calls:
                for _ in range(args.rounds):
                    for tree in trees:
                        figures = run_event_loop(
                            run(
                                calls,
                                args.seconds,
                                audio,
                                args.workers,
                                tree,
                                args.profile,
                                delta_ms,
                                append_ms,
                                args.database,
                                args.instances,
                            )
                        )
                        print(figures.row(), flush=True)


if __name__ == "__main__":
    main()
