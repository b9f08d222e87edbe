"""Per-frame CPU cost and quality of the audio path: our FIR codec vs audioop.ratecv vs μ-law
pass-through, all driven through the real `CallSession` in the same run.

Inbound, per 20 ms Twilio frame: decode the `media` message (JSON + base64), transcode,
encode `input_audio_buffer.append`. Outbound, per 20 ms of model audio: decode the delta
event (JSON + base64), transcode, cut into 20 ms chunks, encode the `media` + `mark`
messages, and decode and apply Twilio's mark echo: the steps of the channels and the
session on a live call. Costs are thread CPU time; each figure is the median over
interleaved rounds.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.call.core.messages import SendToRealtime, SendToTwilio  # noqa: E402
from bot.call.core.session import CallSession  # noqa: E402
from bot.core import twilio as tw  # noqa: E402
from bot.core.codec import (  # noqa: E402
    Downsampler,
    Pcm16Transcoder,
    Upsampler,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from bot.core.realtime import events as rt  # noqa: E402
from bot.core.realtime.client import decode_server_event, encode_client_event  # noqa: E402
from bot.core.realtime.dialects import Dialect  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the baseline: ratecv

SID = "MZ" + "0" * 32
CALL = "CA" + "0" * 32


class RatecvTranscoder:
    """The same transcoder interface over `audioop.ratecv` (no anti-alias filter)."""

    def __init__(self) -> None:
        self._in: object = None
        self._out: object = None
        self._carry = b""

    def to_model(self, ulaw: bytes) -> bytes:
        pcm, self._in = audioop.ratecv(ulaw_to_pcm16(ulaw), 2, 1, 8000, 24000, self._in)
        return bytes(pcm)

    def to_caller(self, audio: bytes) -> bytes:
        audio = self._carry + audio
        if len(audio) & 1:
            audio, self._carry = audio[:-1], audio[-1:]
        else:
            self._carry = b""
        pcm, self._out = audioop.ratecv(audio, 2, 1, 24000, 8000, self._out)
        return pcm16_to_ulaw(pcm)

    def forget_answer(self) -> None:
        self._out, self._carry = None, b""


def speechlike(seconds: float, rate: int) -> bytes:
    """Noise shaped like speech: energy falling with frequency, syllable-rate envelope."""
    rng = np.random.default_rng(7)
    n = int(seconds * rate)
    noise = np.cumsum(rng.standard_normal(n)) * 0.02 + rng.standard_normal(n) * 0.3
    noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * np.arange(n) / rate)
    x = noise * envelope
    x *= 8000 / (np.std(x) + 1e-9)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def sessions() -> dict[str, Callable[[], CallSession]]:
    return {
        "ours (FIR)": lambda: CallSession(SID, CALL, rt.AudioFormat.PCM16),
        "audioop.ratecv": lambda: CallSession(
            SID, CALL, rt.AudioFormat.PCM16, transcoder=RatecvTranscoder()
        ),
        "pass-through": lambda: CallSession(SID, CALL, rt.AudioFormat.G711_ULAW),
    }


def inbound_frames(seconds: float) -> list[str]:
    ulaw = pcm16_to_ulaw(speechlike(seconds, 8000))
    return [tw.phone_media(SID, ulaw[i * 160 : (i + 1) * 160], i) for i in range(len(ulaw) // 160)]


def delta_events(seconds: float, delta_ms: int, passthrough: bool) -> list[str]:
    if passthrough:
        audio, per_ms = pcm16_to_ulaw(Downsampler().process(speechlike(seconds, 24000))), 8
    else:
        audio, per_ms = speechlike(seconds, 24000), 48
    step = delta_ms * per_ms
    return [
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_{i}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(audio[i : i + step]).decode(),
            }
        )
        for i in range(0, len(audio), step)
    ]


def run_inbound(session: CallSession, frames: list[str]) -> None:
    for frame in frames:
        event = tw.decode(frame)
        assert event is not None
        for command in session.handle_twilio(event):
            assert isinstance(command, SendToRealtime)
            encode_client_event(command.event, Dialect.GA)


def run_outbound(session: CallSession, deltas: list[str]) -> None:
    for text in deltas:
        event = decode_server_event(text)
        assert event is not None
        for command in session.handle_realtime(event):
            if not isinstance(command, SendToTwilio):
                continue
            sent = tw.encode(command.message)
            if isinstance(command.message, tw.OutboundMark):
                # Twilio's echo has the shape of the mark we sent.
                echo = tw.decode(sent)
                assert echo is not None
                session.handle_twilio(echo)


def measure(rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    frames = inbound_frames(seconds)
    deltas = {
        (delta_ms, passthrough): delta_events(seconds, delta_ms, passthrough)
        for delta_ms in (20, 100)
        for passthrough in (False, True)
    }
    n_frames = len(frames)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in sessions()}
    for _ in range(rounds):
        for name, make in sessions().items():
            passthrough = name == "pass-through"
            cases: dict[str, Callable[[CallSession], None]] = {
                "in": lambda s: run_inbound(s, frames),
                "out20": lambda s, p=passthrough: run_outbound(s, deltas[(20, p)]),
                "out100": lambda s, p=passthrough: run_outbound(s, deltas[(100, p)]),
            }
            for case, run in cases.items():
                session = make()
                session.handle_realtime(
                    rt.ResponseCreated(rt.ResponseInfo("resp_1", "in_progress"))
                )
                start = time.thread_time_ns()
                run(session)
                elapsed_us = (time.thread_time_ns() - start) / 1000
                samples[name].setdefault(case, []).append(elapsed_us / n_frames)
    return {
        name: {case: statistics.median(values) for case, values in cases.items()}
        for name, cases in samples.items()
    }


def tone(freq_hz: float, rate: int, seconds: float = 1.0, dbfs: float = -6.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (
        np.rint(32767 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()
    )


def level_db(pcm: bytes, freq_hz: float, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)[rate // 20 :]
    x = x[: len(x) - len(x) % (rate // 10)]
    t = np.arange(len(x)) / rate
    amplitude = 2 * abs(np.sum(x * np.exp(-2j * np.pi * freq_hz * t))) / len(x)
    return 20 * math.log10(max(amplitude, 1e-9) / 32767)


def rms_db(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)[rate // 20 :]
    return 20 * math.log10(max(float(np.sqrt(np.mean(x**2))) * math.sqrt(2), 1e-9) / 32767)


def quality() -> dict[str, dict[str, str]]:
    def ratecv_down(pcm: bytes) -> bytes:
        return audioop.ratecv(pcm, 2, 1, 24000, 8000, None)[0]

    def ratecv_up(pcm: bytes) -> bytes:
        return audioop.ratecv(pcm, 2, 1, 8000, 24000, None)[0]

    methods = {
        "ours (FIR)": (lambda p: Downsampler().process(p), lambda p: Upsampler().process(p)),
        "audioop.ratecv": (ratecv_down, ratecv_up),
    }
    table: dict[str, dict[str, str]] = {}
    for name, (down, up) in methods.items():
        rejection = min(-6 - rms_db(down(tone(f, 24000)), 8000) for f in range(5000, 11001, 500))
        passband = [level_db(down(tone(f, 24000)), f, 8000) + 6 for f in range(300, 3401, 100)]
        passband += [level_db(up(tone(f, 8000)), f, 24000) + 6 for f in range(300, 3401, 100)]
        images = -6 - level_db(up(tone(3000, 8000)), 5000, 24000)
        table[name] = {
            "alias rejection 5-11 kHz (worst)": f"{rejection:.1f} dB",
            "passband 300-3400 Hz, both ways": f"{min(passband):+.2f} .. {max(passband):+.2f} dB",
            "image of 3 kHz at 5 kHz (8k->24k)": f"{images:.1f} dB down",
        }
    # Delay of ours: where an impulse comes out.
    impulse = np.zeros(2400, "<i2")
    impulse[1200] = 20000
    out = np.frombuffer(Downsampler().process(impulse.tobytes()), "<i2")
    delay_ms = (int(np.argmax(np.abs(out))) * 3 - 1200) / 24
    table["ours (FIR)"]["audio held in resampler"] = f"{delay_ms:.2f} ms, no bursts"
    table["audioop.ratecv"]["audio held in resampler"] = "~0 ms"
    return table


def chunking_invariant() -> bool:
    pcm = speechlike(1.0, 24000)
    whole = Pcm16Transcoder().to_caller(pcm)
    codec = Pcm16Transcoder()
    rng = np.random.default_rng(3)
    parts, i = [], 0
    while i < len(pcm):
        n = int(rng.integers(1, 3000))
        parts.append(codec.to_caller(pcm[i : i + n]))
        i += n
    up_whole = Pcm16Transcoder().to_model(pcm16_to_ulaw(pcm[:16000]))
    up = Pcm16Transcoder()
    up_parts = b"".join(up.to_model(pcm16_to_ulaw(pcm[j : j + 320])) for j in range(0, 16000, 320))
    return b"".join(parts) == whole and up_parts == up_whole


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per round")
    args = parser.parse_args()

    cost = measure(args.rounds, args.seconds)
    print(
        f"Per-frame CPU cost, median of {args.rounds} interleaved rounds over {args.seconds:g} s "
        f"of audio each (µs per 20 ms; Python {sys.version.split()[0]}, numpy {np.__version__})"
    )
    print()
    print("| path | inbound | outbound, 20 ms deltas | outbound, 100 ms deltas | calls per core* |")
    print("|---|---|---|---|---|")
    for name, case in cost.items():
        calls = 1e6 / (50 * (case["in"] + case["out100"]))
        figures = " | ".join(f"{case[key]:.1f}" for key in ("in", "out20", "out100"))
        print(f"| {name} | {figures} | {calls:.0f} |")
    ours, base = cost["ours (FIR)"], cost["audioop.ratecv"]
    ratios = {case: ours[case] / base[case] for case in ("in", "out20", "out100")}
    print()
    print("*full duplex, audio path only (no socket, TLS or asyncio cost).")
    print(
        "ours / ratecv path: inbound {in:.2f}x, outbound {out20:.2f}x (20 ms) / "
        "{out100:.2f}x (100 ms); bar: within 3x".format(**ratios)
    )
    print()
    q = quality()
    rows = list(next(iter(q.values())))
    print("| quality | " + " | ".join(q) + " |")
    print("|---|" + "---|" * len(q))
    for row in rows:
        print(f"| {row} | " + " | ".join(q[name][row] for name in q) + " |")
    invariant = chunking_invariant()
    print(f"| identical output whatever the chunking | {'yes' if invariant else 'NO'} | yes |")
    rejection = float(q["ours (FIR)"]["alias rejection 5-11 kHz (worst)"].split()[0])
    low, high = (
        float(v) for v in q["ours (FIR)"]["passband 300-3400 Hz, both ways"].split()[0:3:2]
    )
    ok = rejection >= 60 and -1 <= low and high <= 1 and invariant and max(ratios.values()) <= 3
    print()
    print(
        "codec bar (60 dB alias rejection, ±1 dB passband, chunking-invariant, ≤3x CPU): "
        + ("met" if ok else "NOT MET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
