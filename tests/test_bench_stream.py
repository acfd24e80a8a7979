"""The streaming benchmark's player replay (pure: arrival times in, underruns out)."""

from __future__ import annotations

from typing import Any

from app.bench_stream import replay_player


def audio(ms: int) -> dict[str, Any]:
    return {"type": "audio", "data": b"\x00\x00" * (24 * ms)}


def test_a_slow_first_segment_holds_the_start_and_avoids_the_gap() -> None:
    first = [
        (0.5, audio(500)),
        (0.5, {"type": "segment", "seg": 0, "gen_ms": 500, "samples": 12_000}),
    ]
    second = [
        (1.3, audio(1000)),
        (1.3, {"type": "segment", "seg": 1, "gen_ms": 800, "samples": 24_000}),
    ]
    underruns, hold = replay_player([*first, *second])
    assert underruns == 0
    assert round(hold, 3) == 0.495  # 1.75 x 0.5 s - 0.5 s + 0.12 s pre-roll


def test_audio_arriving_after_the_buffer_ran_dry_counts_an_underrun() -> None:
    first = [
        (0.2, audio(300)),
        (0.2, {"type": "segment", "seg": 0, "gen_ms": 100, "samples": 7200}),
    ]
    late = [(2.0, audio(300))]
    underruns, hold = replay_player([*first, *late])
    assert hold == 0
    assert underruns == 1
