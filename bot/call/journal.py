"""Everything kept about one call as it happens: call log rows, metrics, the recording and
log lines, projected from the session's reports and the loop's own facts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import assert_never

from bot.call.core.messages import (
    DigitPressed,
    FalseInterruption,
    IdlePrompted,
    Interrupted,
    Notice,
    PlayedAudio,
    Report,
    ResponseFinished,
    ToolRecord,
    TurnRecord,
)
from bot.call.core.session import CallStats
from bot.call.metrics import Metrics
from bot.calllog.recorder import CallRecorder
from bot.calllog.writer import CallLog
from bot.log import CallLogger
from bot.store.schema import utcnow

__all__ = ["CallJournal", "SessionLabel"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


@dataclass(frozen=True)
class SessionLabel:
    """What the call log says about the model side of every call."""

    provider: str | None
    model: str
    dialect: str
    audio_mode: str


class CallJournal:
    def __init__(
        self,
        call_sid: str,
        call_log: CallLog,
        metrics: Metrics,
        log: CallLogger,
        recorder: CallRecorder | None,
    ) -> None:
        self.call_sid = call_sid
        self.call_log = call_log
        self.metrics = metrics
        self.log = log
        self.recorder = recorder
        # Both sides' audio as the caller had it, for an independent transcript (track,
        # μ-law, call ms where it starts): the caller's `inbound`, the bot's `outbound`.
        self.tap: Callable[[str, bytes, int], None] | None = None
        self._latency_seen: set[str] = set()

    def started(self, stream_sid: str, parameters: Mapping[str, str], label: SessionLabel) -> None:
        now = utcnow()
        self.call_log.call(
            self.call_sid,
            stream_sid=stream_sid,
            started_at=now,
            answered_at=now,
            direction=parameters.get("direction") or "inbound",
            from_number=parameters.get("from") or None,
            to_number=parameters.get("to") or None,
            provider=label.provider,
            model=label.model,
            dialect=label.dialect,
            audio_mode=label.audio_mode,
            recording_path=str(self.recorder.path) if self.recorder else None,
        )

    def resumed(self, stream_sid: str) -> None:
        """The call moved here from another instance: its row exists; the stream is new."""
        self.call_log.call(self.call_sid, stream_sid=stream_sid)

    def record(self, reports: list[Report], now_ms: int) -> None:
        """The session's reports, in order."""
        call_sid, log, call_log = self.call_sid, self.log, self.call_log
        for report in reports:
            match report:
                case PlayedAudio(ulaw, ended_ms):
                    if self.recorder is not None:
                        self.recorder.bot(ulaw, ended_ms)
                    if self.tap is not None:
                        self.tap("outbound", ulaw, ended_ms - len(ulaw) // 8)
                case TurnRecord():
                    call_log.turn(call_sid, report)
                    if report.latency_ms is not None and report.item_id not in self._latency_seen:
                        self._latency_seen.add(report.item_id)
                        self.metrics.turn_latency.observe(report.latency_ms / 1000)
                    if report.text is not None and report.ended_ms is not None:
                        shown = report.heard_text if report.interrupted else report.text
                        log.info("%s: %s", report.speaker, _shorten(shown or ""))
                case Interrupted(item_id, audio_end_ms, received_ms, cleared, at_ms, decided):
                    log.info(
                        "barge-in: item %s truncated at %d ms of %d ms received%s%s",
                        item_id,
                        audio_end_ms,
                        received_ms,
                        " (Twilio cleared)" if cleared else "",
                        f", confirmed {decided} ms after the pause" if decided else "",
                    )
                    self.metrics.barge_ins.inc()
                    call_log.increment(call_sid, interruptions=1)
                    call_log.event(
                        call_sid,
                        at_ms,
                        "interruption",
                        f"caller spoke over the bot; heard {audio_end_ms} of {received_ms} ms"
                        + (f"; confirmed after {decided} ms" if decided else ""),
                        {
                            "item_id": item_id,
                            "audio_end_ms": audio_end_ms,
                            "decided_after_ms": decided,
                        },
                    )
                case DigitPressed(digit, at_ms):
                    log.info("caller pressed %s", digit)
                    call_log.event(call_sid, at_ms, "dtmf", digit)
                case ResponseFinished(response_id, status, reason, usage):
                    usage = usage or {}
                    call_log.increment(
                        call_sid,
                        input_tokens=_int(usage.get("input_tokens")),
                        output_tokens=_int(usage.get("output_tokens")),
                        total_tokens=_int(usage.get("total_tokens")),
                    )
                    if status not in ("completed", "cancelled"):
                        self.error(now_ms, f"response {response_id} ended {status} ({reason})")
                case ToolRecord(name, arguments, result, at_ms):
                    self.tool(name, arguments, result, None, 0, at_ms)
                case FalseInterruption(item_id, sound_ms, paused_ms, at_ms):
                    log.info(
                        "not an interruption (%d ms of sound): the answer goes on after a "
                        "%d ms pause",
                        sound_ms,
                        paused_ms,
                    )
                    self.metrics.false_interruptions.inc()
                    call_log.event(
                        call_sid,
                        at_ms,
                        "false_interruption",
                        f"{sound_ms} ms of sound over the bot; it went on after {paused_ms} ms",
                        {"item_id": item_id, "sound_ms": sound_ms, "paused_ms": paused_ms},
                    )
                case IdlePrompted(count, goodbye, at_ms):
                    kind = "idle_goodbye" if goodbye else "idle_prompt"
                    detail = (
                        "the caller stayed silent: goodbye, then hang-up"
                        if goodbye
                        else f"the caller is silent: asked whether they are there ({count})"
                    )
                    log.info("%s", detail)
                    self.metrics.idle_prompts.labels(kind="goodbye" if goodbye else "prompt").inc()
                    call_log.event(call_sid, at_ms, kind, detail, {"count": count})
                case Notice(level, message, at_ms):
                    log.log(_LEVELS[level], "%s", message)
                    if level == "warning":
                        self.metrics.realtime_errors.inc()
                        call_log.event(call_sid, at_ms, "error", message)
                        call_log.increment(call_sid, errors=1)
                case _:
                    assert_never(report)

    def caller_audio(self, ulaw: bytes, at_ms: int) -> None:
        if self.recorder is not None:
            self.recorder.caller(ulaw, at_ms)
        if self.tap is not None:
            self.tap("inbound", ulaw, at_ms)

    def tool(
        self,
        name: str,
        arguments: str,
        output: str,
        error: str | None,
        duration_ms: int,
        at_ms: int,
    ) -> None:
        if error is not None:
            self.log.warning("tool %s failed: %s", name, error)
            self.call_log.increment(self.call_sid, errors=1)
        else:
            self.log.info("tool %s(%s) -> %s", name, _shorten(arguments, 80), _shorten(output, 80))
        self.call_log.event(
            self.call_sid,
            at_ms,
            "tool",
            f"{name}({arguments}) → {output}",
            {
                "name": name,
                "arguments": arguments,
                "result": output,
                "error": error,
                "duration_ms": duration_ms,
            },
        )

    def error(self, at_ms: int, detail: str) -> None:
        self.log.warning("%s", detail)
        self.call_log.event(self.call_sid, at_ms, "error", detail)
        self.call_log.increment(self.call_sid, errors=1)

    def session_changed(
        self, at_ms: int, kind: str, detail: str, data: Mapping[str, object] | None = None
    ) -> None:
        """A new Realtime session carries the call on: reconnect, renewal or handover."""
        self.log.info("%s: %s", kind, detail)
        self.metrics.session_changes.labels(kind=kind).inc()
        self.call_log.event(self.call_sid, at_ms, kind, detail, dict(data or {}))

    def transfer(self, at_ms: int, target: str, reason: str) -> None:
        self.call_log.event(self.call_sid, at_ms, "transfer", f"to {target}: {reason}")

    def answered_by(self, answered_by: str) -> None:
        self.call_log.call(self.call_sid, answered_by=answered_by)

    def ended(
        self,
        end_by: str,
        reason: str,
        stats: CallStats,
        at_ms: int,
        duration_s: float,
        frame_summary: str,
    ) -> None:
        if self.recorder is not None:
            try:
                self.recorder.close()
            except OSError as exc:
                self.log.error("recording could not be finished: %s", exc.strerror)
        if end_by == "realtime":
            self.metrics.realtime_errors.inc()
            self.call_log.event(self.call_sid, at_ms, "error", reason)
            self.call_log.increment(self.call_sid, errors=1)
        self.call_log.call(self.call_sid, ended_at=utcnow(), ended_by=end_by, end_reason=reason)
        self.metrics.call_finished(end_by, stats)
        playback = stats.playback
        self.log.info(
            "call ended by %s (%s) after %.1f s: frames in %d / out %d, marks %d/%d played, "
            "interruptions %d, clears %d, deltas dropped %d, tokens %d%s",
            end_by,
            reason,
            duration_s,
            stats.frames_in,
            playback.frames_out,
            playback.marks_played,
            playback.marks_sent,
            stats.interruptions,
            playback.clears,
            stats.deltas_dropped,
            stats.usage_total_tokens,
            frame_summary,
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
