"""The one rule for what a caller heard of an answer, used by the call log and the backend."""

from __future__ import annotations

from bot.core.heard import heard_text


def test_one_piece_is_cut_at_a_word_boundary_in_proportion_to_its_audio() -> None:
    pieces = [("hello there friend", 1000)]
    assert heard_text(pieces, 500) == "hello"
    assert heard_text(pieces, 990) == "hello there friend"  # all but the tail: heard
    assert heard_text(pieces, 0) == ""
    assert heard_text(pieces, 5000) == "hello there friend"


def test_a_word_cut_in_the_middle_was_not_heard() -> None:
    assert heard_text([("extraordinary", 1000)], 600) == ""


def test_pieces_played_in_full_are_kept_and_the_cut_falls_in_the_next() -> None:
    sentences = [("First part here.", 1000), ("Second part has four words.", 1000)]
    assert heard_text(sentences, 1000) == "First part here."
    assert heard_text(sentences, 1500) == "First part here. Second part"
    assert heard_text(sentences, 2000) == "First part here. Second part has four words."


def test_text_without_audio_counts_once_playback_reaches_it() -> None:
    pieces = [("Spoken.", 500), ("Never synthesized.", 0), ("Spoken again.", 500)]
    assert heard_text(pieces, 500) == "Spoken. Never synthesized."
    assert heard_text(pieces, 250) == ""
