"""End of turn on the local backend: `semantic_vad` (a probe of the words at a 200 ms
pause, `bot/localrt/core/endpointing.py`) against `server_vad`'s fixed 500 ms of silence.

Piper says finished turns ("What time do you close today?") and turns with a hesitation
in them ("I'd like to order a ... large pizza."). Each goes through the local session core
frame by frame, as μ-law from the bridge; Whisper (`tiny.en`, the local backend's) runs
for real, and its wall time is added to the call's clock (the caller stays silent
meanwhile). For each clip:

* when the caller's words were ready for the chat model, from the end of their speech:
  the turn's end plus its transcription (with `semantic_vad`, the probe's words are the
  transcript, so no second run);
* whether the turn was cut during the hesitation (a wrong end).

`--smart-turn` also times pipecat's bundled smart-turn v3.2 model per decision (needs
`pip install pipecat-ai`), the model the rule would otherwise have used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.codec import pcm16_to_ulaw, resample  # noqa: E402
from bot.core.realtime import events as rt  # noqa: E402
from bot.localrt.core.session import (  # noqa: E402
    Emit,
    Output,
    ProbeTurn,
    RealtimeServerSession,
    Transcribe,
)

RATE = 8000
FRAME = 160  # 20 ms of μ-law
FINISHED = (
    "What time do you close today?",
    "I'd like to check the status of my order.",
    "Can you transfer me to billing?",
    "No thanks, that's all.",
    "My order number is four four one seven.",
)
HESITANT = (
    ("I'd like to order a", "large pizza with mushrooms."),
    ("My order number is", "four four one seven."),
    ("I'm calling because", "my card was charged twice."),
    ("Could you tell me, um,", "when you open tomorrow?"),
)
HESITATION_S = 0.8


def speak(voice: object, text: str) -> np.ndarray:
    speech = voice._run(text)  # type: ignore[attr-defined]
    pcm = np.frombuffer(resample(speech.pcm16, speech.rate_hz, RATE), "<i2")
    loud = np.flatnonzero(np.abs(pcm) > 300)
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm  # no silence around it


def run_turn(
    transcriber: object, pcm: np.ndarray, semantic: bool
) -> tuple[float | None, bool, str]:
    """(ms from the end of speech to the caller's words, turn cut early, the words)."""
    session = RealtimeServerSession("sess_bench00001", "local")
    session.open()
    turn = rt.TurnDetection(semantic=semantic, create_response=False, eagerness="auto")
    session.receive(
        rt.SessionUpdate(
            rt.SessionConfig(input_format=rt.AudioFormat.G711_ULAW, turn_detection=turn)
        )
    )
    lead = np.zeros(RATE // 2, "<i2")
    tail = np.zeros(RATE * 6, "<i2")
    ulaw = pcm16_to_ulaw(np.concatenate([lead, pcm, tail]).astype("<i2").tobytes())
    speech_end_ms = (len(lead) + len(pcm)) * 1000 // RATE
    frames = [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]
    pending: list[tuple[int, Output]] = []  # (audio ms when its result is back, job)
    now_ms = 0

    def transcribe(pcm16: bytes, rate: int) -> tuple[str, int]:
        started = time.perf_counter()
        text = transcriber._run(pcm16, rate, None)  # type: ignore[attr-defined]
        return text, int((time.perf_counter() - started) * 1000)

    for frame in frames:
        now_ms += 20
        outputs = session.receive(rt.AppendAudio(frame))
        for due_ms, job in [p for p in pending if p[0] <= now_ms]:
            pending.remove((due_ms, job))
            assert isinstance(job, ProbeTurn)
            text, _ = transcribe(job.pcm16, job.rate_hz)
            outputs += session.turn_probed(job.probe_id, text)
        for output in outputs:
            if isinstance(output, ProbeTurn):
                _, took = transcribe(output.pcm16, output.rate_hz)
                pending.append((now_ms + took, output))
            elif isinstance(output, Transcribe):
                text, took = transcribe(output.pcm16, output.rate_hz)
                return now_ms + took - speech_end_ms, now_ms < speech_end_ms, text
            elif isinstance(output, Emit) and isinstance(output.event, rt.InputTranscriptCompleted):
                # The probe's words, ready when the probe came back (this frame).
                return now_ms - speech_end_ms, now_ms < speech_end_ms, output.event.transcript
    return None, False, ""


def smart_turn_ms(rounds: int) -> float:
    import importlib.util

    import onnxruntime as ort
    from loguru import logger

    logger.disable("pipecat")
    from pipecat.audio.turn.smart_turn._whisper_features import (
        compute_whisper_log_mel_features,
    )

    spec = importlib.util.find_spec("pipecat")
    assert spec is not None and spec.origin is not None
    model = Path(spec.origin).parent / "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=options)
    audio = np.random.default_rng(0).normal(0, 0.05, 16000 * 8).astype(np.float32)
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        features = compute_whisper_log_mel_features(audio, do_normalize=True)
        session.run(None, {"input_features": features[None]})
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def main(rounds: int, with_smart_turn: bool) -> None:
    from bot.localrt.offline import PiperVoice, WhisperTranscriber

    voice = PiperVoice(varied=False)
    transcriber = WhisperTranscriber()
    gap = np.zeros(int(HESITATION_S * RATE), "<i2")
    clips = [(text, speak(voice, text)) for text in FINISHED]
    clips += [
        (f"{a} … {b}", np.concatenate([speak(voice, a), gap, speak(voice, b)])) for a, b in HESITANT
    ]
    print("| clip | server_vad (500 ms) | semantic_vad |")
    print("|---|---|---|")
    summary: dict[str, list[float]] = {"fixed": [], "semantic": []}
    cuts = {"fixed": 0, "semantic": 0}
    for text, pcm in clips:
        cells = []
        for mode, semantic in (("fixed", False), ("semantic", True)):
            latencies = []
            cut = False
            for _ in range(rounds):
                latency, cut, words = run_turn(transcriber, pcm, semantic)
                if latency is not None and not cut:
                    latencies.append(latency)
            cuts[mode] += cut
            if cut:
                cells.append(f"cut at the pause ({words!r})")
            elif latencies:
                median = statistics.median(latencies)
                summary[mode].append(median)
                cells.append(f"{median:.0f} ms")
            else:
                cells.append("no end")
        print(f"| {text} | {cells[0]} | {cells[1]} |")
    for mode in ("fixed", "semantic"):
        times = summary[mode]
        median = statistics.median(times) if times else float("nan")
        print(f"{mode}: median {median:.0f} ms to the words; {cuts[mode]} turns cut early")
    if with_smart_turn:
        print(f"smart-turn v3.2 (pipecat-ai, ONNX, 1 thread): {smart_turn_ms(20):.0f} ms/decision")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smart-turn", action="store_true")
    args = parser.parse_args()
    main(args.rounds, args.smart_turn)
