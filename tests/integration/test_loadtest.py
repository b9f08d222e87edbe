"""A smoke run of `scripts/loadtest`: the real server, the echo backend and two phones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loadtest_delivers_every_frame_both_ways() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "loadtest.py"),
            "--calls",
            "2",
            "--seconds",
            "4",
            "--audio",
            "pcm16",
            "--delta-ms",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=True,
    )
    [row] = [line for line in run.stdout.splitlines() if line.startswith("| PCM16")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "PCM16, transcoded, 100 ms deltas" and cells[1] == "2"
    assert cells[4] == cells[5] == "100.0 %"  # delivered to the model and to the phone
    assert float(cells[2].rstrip(" %")) > 0  # the server's CPU was measured
