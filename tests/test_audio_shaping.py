"""Segment shaping, sample encoding and adaptive frame sizing (``actors.audio``), no model."""

from __future__ import annotations

import numpy as np
import pytest

from actors.audio import (
    FADE,
    LEAD_MARGIN,
    PAUSE_MS,
    TAIL_MARGIN,
    FrameSizer,
    Samples,
    encode_samples,
    shape_segment,
)
from app.tts.engine import SAMPLE_RATE

LEAD_SILENCE = int(0.3 * SAMPLE_RATE)
SPEECH = SAMPLE_RATE  # 1 s
TAIL_SILENCE = int(0.6 * SAMPLE_RATE)


def sine(seconds: float, freq: float = 200.0, amplitude: float = 0.3) -> Samples:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def model_like() -> Samples:
    """What a model call looks like: silence, one second of "speech", longer silence."""
    return np.concatenate(
        [
            np.zeros(LEAD_SILENCE, dtype=np.float32),
            sine(1.0),
            np.zeros(TAIL_SILENCE, dtype=np.float32),
        ]
    )


# --- shape_segment ---------------------------------------------------------------------------


def test_trims_silence_to_speech_plus_margins() -> None:
    audio = model_like()
    shaped = shape_segment(audio, "word", final=False)  # a word boundary adds no pause
    assert PAUSE_MS["word"] == 0
    assert len(shaped) == LEAD_MARGIN + SPEECH + TAIL_MARGIN
    # The speech itself is untouched (the fades fall on the silent margins).
    np.testing.assert_array_equal(shaped[LEAD_MARGIN : LEAD_MARGIN + SPEECH], sine(1.0))
    # The margins are the (silent) audio around the speech.
    assert not shaped[:LEAD_MARGIN].any()
    assert not shaped[LEAD_MARGIN + SPEECH :].any()


def test_fades_the_cut_edges() -> None:
    # Loud from the very first to the very last sample: the cut edges are mid-signal.
    audio = np.full(SAMPLE_RATE // 2, 0.5, dtype=np.float32)
    shaped = shape_segment(audio, "word", final=True)
    assert len(shaped) == len(audio)
    assert shaped[0] == 0.0
    assert shaped[-1] == 0.0
    # Ramps without a step: monotonic, each step small.
    head, tail = shaped[:FADE], shaped[-FADE:]
    assert np.all(np.diff(head) >= 0)
    assert np.all(np.diff(tail) <= 0)
    assert np.max(np.abs(np.diff(head))) < 0.01
    assert np.max(np.abs(np.diff(tail))) < 0.01
    assert shaped[FADE] == pytest.approx(0.5)
    np.testing.assert_array_equal(shaped[FADE:-FADE], audio[FADE:-FADE])


def test_sine_edges_start_and_end_near_zero() -> None:
    shaped = shape_segment(model_like(), "sentence", final=True)
    assert abs(shaped[0]) < 1e-3
    assert abs(shaped[-1]) < 1e-3
    assert np.max(np.abs(np.diff(shaped))) < 0.1  # 200 Hz at 0.3: no jump anywhere


@pytest.mark.parametrize("boundary", ["sentence", "clause", "word"])
def test_appends_the_pause_for_the_boundary(boundary: str) -> None:
    base = LEAD_MARGIN + SPEECH + TAIL_MARGIN
    pause = PAUSE_MS[boundary] * SAMPLE_RATE // 1000
    shaped = shape_segment(model_like(), boundary, final=False)
    assert len(shaped) == base + pause
    assert not shaped[base:].any()


def test_pause_lengths_are_as_documented() -> None:
    assert PAUSE_MS == {"sentence": 320, "clause": 160, "word": 0}
    shaped = shape_segment(model_like(), "sentence", final=False)
    assert len(shaped) - (LEAD_MARGIN + SPEECH + TAIL_MARGIN) == int(0.32 * SAMPLE_RATE)


@pytest.mark.parametrize("boundary", ["sentence", "clause", "word"])
def test_no_pause_after_the_final_segment(boundary: str) -> None:
    shaped = shape_segment(model_like(), boundary, final=True)
    assert len(shaped) == LEAD_MARGIN + SPEECH + TAIL_MARGIN


@pytest.mark.parametrize("length", [0, 10, SAMPLE_RATE])
def test_all_silent_input_gives_empty_output(length: int) -> None:
    shaped = shape_segment(np.zeros(length, dtype=np.float32), "sentence", final=False)
    assert shaped.dtype == np.float32
    assert len(shaped) == 0


def test_quiet_noise_counts_as_silence() -> None:
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(SAMPLE_RATE) * 1e-4).astype(np.float32)  # about -80 dBFS
    assert len(shape_segment(hiss, "clause", final=False)) == 0


def test_shaping_is_deterministic_and_pure() -> None:
    audio = model_like()
    copy = audio.copy()
    first = shape_segment(audio, "clause", final=False)
    second = shape_segment(audio.copy(), "clause", final=False)
    assert first.dtype == np.float32
    assert first.tobytes() == second.tobytes()
    np.testing.assert_array_equal(audio, copy)  # the input is not modified


# --- encode_samples ----------------------------------------------------------------------------


def test_pcm_s16le_is_little_endian_int16_and_clipped() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0], dtype=np.float32)
    data = encode_samples(samples, "pcm_s16le")
    assert len(data) == 2 * len(samples)
    decoded = np.frombuffer(data, dtype="<i2")
    assert decoded.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    assert data[2:4] == (16384).to_bytes(2, "little", signed=True)


def test_pcm_s16le_round_trip_is_within_one_step() -> None:
    samples = sine(0.1, amplitude=0.9)
    decoded = np.frombuffer(encode_samples(samples, "pcm_s16le"), dtype="<i2") / 32767.0
    assert np.max(np.abs(decoded - samples)) <= 0.5 / 32767 + 1e-9


def test_f32le_is_little_endian_float32() -> None:
    samples = np.array([0.0, 0.25, -1.5, 3.0], dtype=np.float32)
    data = encode_samples(samples, "f32le")
    assert len(data) == 4 * len(samples)
    np.testing.assert_array_equal(np.frombuffer(data, dtype="<f4"), samples)  # not clipped


def test_encoding_empty_samples() -> None:
    empty = np.zeros(0, dtype=np.float32)
    assert encode_samples(empty, "pcm_s16le") == b""
    assert encode_samples(empty, "f32le") == b""


# --- FrameSizer --------------------------------------------------------------------------------


def test_starts_at_start_ms() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=200)
    assert sizer.frame_ms == 40
    assert sizer.frame_samples() == 960
    assert sizer.reason == "start"


def test_comfortable_lead_doubles_up_to_max() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=200, comfortable_lead_ms=1000)
    sizes = []
    changes = []
    for _ in range(4):
        changes.append(sizer.on_lead(1000.0, underrun=False))
        sizes.append(sizer.frame_ms)
    assert sizes == [80, 160, 200, 200]
    assert changes == [True, True, True, False]
    assert sizer.reason == "lead"


def test_underrun_drops_to_min() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=200)
    sizer.on_lead(5000.0, underrun=False)
    assert sizer.frame_ms == 80
    assert sizer.on_lead(5000.0, underrun=True) is True  # an underrun wins over a big lead
    assert (sizer.frame_ms, sizer.reason) == (20, "underrun")
    assert sizer.on_lead(5000.0, underrun=True) is False  # already at the minimum


def test_low_lead_halves_down_to_min() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=160, max_ms=200, comfortable_lead_ms=1000)
    assert sizer.on_lead(100.0, underrun=False) is True
    assert (sizer.frame_ms, sizer.reason) == (80, "low_lead")
    assert sizer.on_lead(249.0, underrun=False) is True
    assert sizer.frame_ms == 40
    assert sizer.on_lead(0.0, underrun=False) is True
    assert sizer.frame_ms == 20
    assert sizer.on_lead(0.0, underrun=False) is False
    assert sizer.frame_ms == 20


def test_middling_lead_keeps_the_size() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=200, comfortable_lead_ms=1000)
    for lead in (250.0, 500.0, 999.0):
        assert sizer.on_lead(lead, underrun=False) is False
    assert (sizer.frame_ms, sizer.reason) == (40, "start")


def test_slow_send_grows_the_frame() -> None:
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=200, slow_send_ratio=0.5)
    assert sizer.on_send(0.020) is False  # exactly half of 40 ms is not slow
    assert sizer.on_send(0.001) is False
    assert sizer.on_send(0.021) is True
    assert (sizer.frame_ms, sizer.reason) == (80, "slow_socket")
    assert sizer.on_send(1.0) is True
    assert sizer.on_send(1.0) is True
    assert sizer.frame_ms == 200
    assert sizer.on_send(1.0) is False


def test_fixed_size_never_changes() -> None:
    sizer = FrameSizer.fixed_at(100)
    assert sizer.frame_ms == 100
    assert sizer.frame_samples() == 2400
    assert sizer.on_lead(0.0, underrun=True) is False
    assert sizer.on_lead(10_000.0, underrun=False) is False
    assert sizer.on_lead(0.0, underrun=False) is False
    assert sizer.on_send(10.0) is False
    assert sizer.frame_ms == 100


@pytest.mark.parametrize(
    ("min_ms", "start_ms", "max_ms"),
    [(0, 40, 200), (-10, 40, 200), (50, 40, 200), (20, 300, 200), (20, 40, 30)],
)
def test_invalid_sizes_raise(min_ms: int, start_ms: int, max_ms: int) -> None:
    with pytest.raises(ValueError, match="frame sizes"):
        FrameSizer(min_ms=min_ms, start_ms=start_ms, max_ms=max_ms)


def test_fixed_at_rejects_a_non_positive_size() -> None:
    with pytest.raises(ValueError):
        FrameSizer.fixed_at(0)


def test_a_network_backlog_grows_frames_instead_of_shrinking_them() -> None:
    sizer = FrameSizer()
    assert sizer.on_lead(lead_ms=1500, underrun=True, in_flight_ms=1400)
    assert (sizer.frame_ms, sizer.reason) == (80, "slow_network")
    assert sizer.on_lead(lead_ms=1500, underrun=True, in_flight_ms=1400)
    assert sizer.frame_ms == 160
    sizer.on_lead(lead_ms=100, underrun=True, in_flight_ms=0)  # backlog gone: underrun rules
    assert (sizer.frame_ms, sizer.reason) == (sizer.min_ms, "underrun")


def test_a_slow_socket_keeps_frames_from_shrinking() -> None:
    sizer = FrameSizer()
    assert sizer.on_send(send_seconds=1.0)
    grown = sizer.frame_ms
    assert not sizer.on_lead(lead_ms=0, underrun=True)
    assert sizer.frame_ms == grown
    sizer.on_send(send_seconds=0.0)
    assert sizer.on_lead(lead_ms=0, underrun=True) and sizer.frame_ms == sizer.min_ms
