from __future__ import annotations

import datetime as dt
from pathlib import Path

from bot.calllog.retention import prune_recordings
from bot.store.calls import LogBatch
from bot.store.schema import utcnow
from bot.store.store import Store


async def test_old_recordings_are_deleted_and_unlinked_from_their_calls(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    old, recent = tmp_path / "old.wav", tmp_path / "recent.wav"
    for path in (old, recent):
        path.write_bytes(b"RIFF")
    batch = LogBatch()
    batch.calls.append(
        (
            "CA" + "1" * 32,
            {"started_at": utcnow() - dt.timedelta(days=31), "recording_path": str(old)},
        )
    )
    batch.calls.append(
        (
            "CA" + "2" * 32,
            {"started_at": utcnow() - dt.timedelta(days=1), "recording_path": str(recent)},
        )
    )
    await store.calls.write(batch)
    assert await prune_recordings(store.calls, retention_days=0) == 0  # 0 keeps everything
    assert await prune_recordings(store.calls, retention_days=30) == 1
    assert not old.exists() and recent.exists()
    gone = await store.calls.get_call("CA" + "1" * 32)
    kept = await store.calls.get_call("CA" + "2" * 32)
    await store.close()
    assert gone is not None and gone["recording_path"] is None
    assert kept is not None and kept["recording_path"] == str(recent)


async def test_files_the_call_log_does_not_know_of_are_pruned_too(tmp_path: Path) -> None:
    """Issue 9, finding 7: a replaced stream's WAV had no row, so retention never saw it."""
    import os

    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    folder = tmp_path / "recordings"
    folder.mkdir()
    orphan, fresh, other = folder / "CAx-MZold.wav", folder / "CAy-MZnew.wav", folder / "notes.txt"
    for path in (orphan, fresh, other):
        path.write_bytes(b"RIFF")
    old = (utcnow() - dt.timedelta(days=40)).timestamp()
    os.utime(orphan, (old, old))
    os.utime(other, (old, old))
    try:
        assert await prune_recordings(store.calls, 30, folder) == 1
    finally:
        await store.close()
    assert not orphan.exists() and fresh.exists() and other.exists()
