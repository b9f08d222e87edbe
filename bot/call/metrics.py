"""Prometheus metrics at `/metrics`. Frame counters are read from the live calls at scrape
time, so the per-frame audio path pays nothing for them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.call.core.session import CallStats
from bot.calllog.writer import CallLog

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(
        self, live_stats: Callable[[], Iterable[CallStats]], call_log: CallLog | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("bot_calls", "Calls by outcome", ["outcome"], registry=self.registry)
        self.barge_ins = Counter(
            "bot_barge_ins", "Caller barge-ins (confirmed interruptions)", registry=self.registry
        )
        self.false_interruptions = Counter(
            "bot_false_interruptions",
            "Sounds over an answer that were not interruptions: the answer went on",
            registry=self.registry,
        )
        self.skipped_frames = Counter(
            "bot_skipped_frames",
            "Media frames of listened calls skipped: no track, an unknown track, a bad payload",
            ["reason"],
            registry=self.registry,
        )
        self.realtime_errors = Counter(
            "bot_realtime_errors", "Realtime errors and failures", registry=self.registry
        )
        self.session_changes = Counter(
            "bot_realtime_session_changes",
            "Realtime sessions replaced mid-call: reconnect (after a drop), renewal (at a turn "
            "boundary), handover (a call moved in from another instance), and failed reconnects",
            ["kind"],
            registry=self.registry,
        )
        self.idle_prompts = Counter(
            "bot_idle_prompts",
            "Silent callers asked whether they are there (kind=prompt) or given up on (goodbye)",
            ["kind"],
            registry=self.registry,
        )
        self.reconnect_gap = Histogram(
            "bot_realtime_reconnect_seconds",
            "From losing a Realtime session to the new one seeded",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.turn_latency = Histogram(
            "bot_turn_latency_seconds",
            "End of caller speech to first bot audio played (mark acknowledged)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.finished_frames_in = 0
        self.finished_frames_out = 0
        self._live_stats = live_stats
        self.call_log = call_log
        self.registry.register(_LiveCollector(self))

    def call_finished(self, outcome: str, stats: CallStats | None) -> None:
        self.calls.labels(outcome=outcome).inc()
        if stats is not None:
            self.finished_frames_in += stats.frames_in
            self.finished_frames_out += stats.playback.frames_out

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        live = list(self._metrics._live_stats())
        active = GaugeMetricFamily("bot_active_calls", "Calls in progress")
        active.add_metric([], len(live))
        frames = CounterMetricFamily(
            "bot_media_frames", "Media messages to and from Twilio", labels=["direction"]
        )
        frames.add_metric(["in"], self._metrics.finished_frames_in + sum(s.frames_in for s in live))
        frames.add_metric(
            ["out"], self._metrics.finished_frames_out + sum(s.playback.frames_out for s in live)
        )
        families: list[Metric] = [active, frames]
        call_log = self._metrics.call_log
        if call_log is not None:
            pending = GaugeMetricFamily("bot_call_log_pending", "Records waiting to be written")
            pending.add_metric([], call_log.pending)
            quarantined = CounterMetricFamily(
                "bot_call_log_quarantined", "Records the database refused", labels=["kind"]
            )
            dropped = CounterMetricFamily(
                "bot_call_log_dropped", "Records dropped past the bound", labels=["kind"]
            )
            for kind in ("call", "increment", "turn", "event"):
                quarantined.add_metric([kind], call_log.quarantined[kind])
                dropped.add_metric([kind], call_log.dropped[kind])
            writer_errors = CounterMetricFamily(
                "bot_call_log_writer_errors", "Unexpected errors the writer survived"
            )
            writer_errors.add_metric([], call_log.writer_errors)
            families += [pending, quarantined, dropped, writer_errors]
        return families
