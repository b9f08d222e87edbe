"""The listened call's pure core: tracks, turns, manual commits and summaries."""

from __future__ import annotations

from bot.core.realtime import events as rt
from bot.listen.core.fork import Fork, ManualTurns, TrackTurns
from bot.listen.core.summary import MAX_TRANSCRIPT_CHARS, read_summary, transcript


def test_frames_are_routed_by_track_and_the_odd_ones_counted() -> None:
    fork = Fork(("inbound", "outbound"))
    assert fork.media(b"\xff" * 160, "inbound") is not None
    assert fork.media(b"\xff" * 160, "outbound") is not None
    assert fork.media(b"\xff" * 160, None) is None
    assert fork.media(b"\xff" * 160, "inbound_track") is None
    assert fork.media(b"", "inbound") is None
    assert fork.media(b"\xff" * 9000, "inbound") is None
    assert dict(fork.skipped) == {"no track": 1, "unknown track": 1, "bad payload": 2}
    # A start that announced only the caller's track: the other one is unknown.
    assert Fork(("inbound",)).media(b"\xff" * 160, "outbound") is None
    assert Fork(("weird",)).tracks == ("inbound",)


def test_a_track_turn_has_its_speaker_times_and_final_words() -> None:
    turns = TrackTurns("agent")
    assert turns.event(rt.SpeechStarted(1200, "item_1")) is None
    assert turns.event(rt.SpeechStopped(2400, "item_1")) is None
    assert turns.event(rt.InputTranscriptDelta("item_1", "Let me")) is None
    record = turns.event(rt.InputTranscriptCompleted("item_1", " Let me check. "))
    assert record is not None
    assert (record.speaker, record.started_ms, record.ended_ms, record.text) == (
        "agent",
        1200,
        2400,
        "Let me check.",
    )
    assert turns.event(rt.InputTranscriptCompleted("item_2", "  ")) is None  # no words


def test_manual_turns_commit_after_a_pause_or_a_long_stretch() -> None:
    manual = ManualTurns()
    commits = [at for at in range(20, 3001, 20) if manual.frame(3000 if at <= 1000 else 0, at)]
    assert commits == [1600]  # 600 ms after the last loud frame
    assert manual.pending.popleft() == (0, 1000)
    talker = ManualTurns()
    long = [at for at in range(20, 40_001, 20) if talker.frame(3000, at)]
    assert long[0] == 15_000  # nobody talks for ever without a commit
    turns = TrackTurns("caller", manual=talker)
    turns.event(rt.AudioCommitted("item_9", None))
    assert turns.started["item_9"] == 0


def test_the_summary_reads_json_fenced_or_not_and_falls_back_to_text() -> None:
    fenced = '```json\n{"summary": "Done.", "action_items": ["Call back", ""]}\n```'
    assert read_summary(fenced).action_items == ("Call back",)
    assert read_summary('{"summary": "Ok", "action_items": "x"}').action_items == ()
    assert read_summary("The caller asked about hours.").summary == (
        "The caller asked about hours."
    )
    assert read_summary("[1, 2]").action_items == ()


def test_the_transcript_for_a_summary_keeps_the_newest_turns() -> None:
    turns = [
        {"speaker": "caller", "text": "Hello"},
        {
            "speaker": "assistant",
            "text": "Hi there, how can I",
            "heard_text": "Hi there",
            "interrupted": True,
        },
        {"speaker": "agent", "text": None},
    ]
    assert transcript(turns) == "Caller: Hello\nBot: Hi there"
    long = [{"speaker": "caller", "text": f"line {n} " + "x" * 100} for n in range(400)]
    text = transcript(long)
    assert len(text) <= MAX_TRANSCRIPT_CHARS + 10 and text.endswith("line 399 " + "x" * 100)
