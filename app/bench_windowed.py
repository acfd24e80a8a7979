"""``python -m app bench windowed``: first audio from a decoder run on windows of frames.

For each ~20-word sentence (one model call), on the model the server would load: the whole
graph's time and audio; the text side's time; then, per window plan, the time to the first
window's audio (text side plus its decode) as a share of the whole call, how far the joined
windows are from the whole call's audio (waveform SNR and log-mel distance, the same durations
by construction), and whether the joins show (the worst step of the log-mel spectrum across a
join beyond the whole call's own step there). The bound is the log-mel distance between the
whole call with the voice's style row and with the neighbouring row (the variant gate's bound).
A control decodes the same windows with every norm statistic taken from the whole call, to show
what keeps windows from matching. Needs the ``quality`` extra.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from app.bench import machine_facts
from app.quality import Transcriber, join_steps_db, log_mel_distance, word_error_rate
from app.settings import Settings
from app.tts.decoder_split import (
    ASR,
    ENERGY,
    F0,
    SAMPLES_PER_FRAME,
    Window,
    decoder_feed,
    join,
    norm_statistics,
    split_graph,
    windows,
    with_norm_inputs,
    with_norm_outputs,
)
from app.tts.engine import session_options
from app.tts.synthesizer import Synthesizer

Audio = npt.NDArray[np.float32]

SENTENCES = (
    "The old lighthouse keeper climbed the narrow stairs every single evening, long before "
    "the first winter storm finally arrived.",
    "Our small team measured the delay on every machine twice, and the results agreed within "
    "a few milliseconds each time.",
    "She carried the heavy basket of apples down the hill, past the church and across the "
    "bridge into town.",
)
WHOLE = 100_000
FADE_FRAMES = 20
"""For the join-step comparison: each window fading in over up to this much of the previous
window's lookahead (the joined audio measured otherwise is butted, which measured closer to the
whole call)."""
PLANS = (
    (20, 20, 40, 20),
    (40, 60, 120, 60),
    (80, 80, 160, 80),
    (60, 20, WHOLE, WHOLE),
    (150, 20, WHOLE, 60),
)
"""(first window, its lookahead, later windows, their context) in 25 ms frames. The fourth plan
decodes a short first window, then the whole segment again and continues from the first
window's end: everything after the first window is the whole call's audio, for about 1.25x
the decoder's work (what ``KOKORO_FIRST_SEGMENT=windowed`` does). The last decodes the rest as
one window from 60 frames before the first window's end: less work, if it sounded as close."""


def snr_db(audio: Audio, reference: Audio) -> float:
    noise = float(np.sum((audio.astype(np.float64) - reference) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


class WindowedBench:
    """The whole graph, its two halves and the norm-statistics variants, as sessions."""

    def __init__(
        self, model_path: Path, options: ort.SessionOptions, transcriber: Transcriber
    ) -> None:
        self.transcriber = transcriber
        model = onnx.load(str(model_path))
        split = split_graph(model)

        def session(graph: onnx.ModelProto | str) -> ort.InferenceSession:
            source = graph if isinstance(graph, str) else graph.SerializeToString()
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

        self.whole = session(str(model_path))
        self.text = session(split.text)
        self.decoder = session(split.decoder)
        self.capture = session(with_norm_outputs(split.decoder))
        self.injected = session(with_norm_inputs(split.decoder))
        self.statistics = norm_statistics(split.decoder)

    def timed_whole(self, feed: dict[str, Any]) -> tuple[Audio, float]:
        started = time.perf_counter()
        audio = self.whole.run(["audio"], feed)[0]
        return np.asarray(audio, dtype=np.float32), time.perf_counter() - started

    def measure(
        self, text: str, tokens: Sequence[int], style: Audio, neighbour: Audio
    ) -> dict[str, Any]:
        ids = np.array([[0, *tokens, 0]], dtype=np.int64)
        speed = np.array([1.0], dtype=np.float32)
        feed = {"tokens": ids, "style": style, "speed": speed}
        self.timed_whole(feed)  # warm-up
        reference, whole_seconds = min(
            (self.timed_whole(feed) for _ in range(2)), key=lambda pair: pair[1]
        )
        next_row, _ = self.timed_whole({**feed, "style": neighbour})
        started = time.perf_counter()
        asr, f0, energy = self.text.run([ASR, F0, ENERGY], feed)
        text_seconds = time.perf_counter() - started
        frames = int(asr.shape[2])
        everything = Window(0, frames, 0, frames)
        captured = self.capture.run(None, decoder_feed(asr, f0, energy, style, everything))
        halves = np.asarray(captured[0], dtype=np.float32)
        statistics_of_whole = dict(zip(self.statistics, captured[1:], strict=True))
        row: dict[str, Any] = {
            "tokens": len(tokens),
            "frames": frames,
            "whole_ms": round(whole_seconds * 1000, 1),
            "text_side_ms": round(text_seconds * 1000, 1),
            "halves_max_abs_difference": float(np.max(np.abs(halves - reference))),
            "neighbour_row_log_mel": round(log_mel_distance(next_row, reference), 3),
            "wer": self._wer(text, reference),
            "plans": [],
        }
        for first, lookahead, size, context in PLANS:
            plan = windows(frames, first, size, context, lookahead)
            pieces, first_seconds = [], 0.0
            oracle_pieces = []
            for index, window in enumerate(plan):
                window_feed = decoder_feed(asr, f0, energy, style, window)
                started = time.perf_counter()
                decoded = self.decoder.run(["audio"], window_feed)[0]
                if index == 0:
                    first_seconds = time.perf_counter() - started
                pieces.append(np.asarray(decoded, dtype=np.float32))
                oracle = self.injected.run(["audio"], {**window_feed, **statistics_of_whole})[0]
                oracle_pieces.append(np.asarray(oracle, dtype=np.float32))
            joined = join(pieces, plan)
            faded = join(pieces, plan, FADE_FRAMES)
            controlled = join(oracle_pieces, plan)
            joins = [window.start * SAMPLES_PER_FRAME for window in plan[1:]]
            first_audio = text_seconds + first_seconds
            row["plans"].append(
                {
                    "first_frames": first,
                    "first_lookahead_frames": lookahead,
                    "window_frames": size,
                    "context_frames": context,
                    "windows": len(plan),
                    "first_audio_ms": round(first_audio * 1000, 1),
                    "first_audio_ratio": round(first_audio / whole_seconds, 3),
                    "snr_db": round(snr_db(joined, reference), 1),
                    "log_mel": round(log_mel_distance(joined, reference), 3),
                    "wer": self._wer(text, joined),
                    "join_step_db": round(join_steps_db(joined, reference, joins), 2),
                    "join_step_db_faded": round(join_steps_db(faded, reference, joins), 2),
                    "whole_statistics_snr_db": round(snr_db(controlled, reference), 1),
                    "whole_statistics_log_mel": round(log_mel_distance(controlled, reference), 3),
                }
            )
        return row

    def _wer(self, text: str, audio: Audio) -> float:
        return round(word_error_rate([text], [self.transcriber.transcribe(audio)]), 3)


def run_windowed_bench(settings: Settings, json_path: Path | None) -> dict[str, Any]:
    synthesizer = Synthesizer.load(settings)
    try:
        voice = settings.default_voice
        config = synthesizer.engine.config
        bench = WindowedBench(config.model_path, session_options(config), Transcriber())
        rows = []
        for sentence in SENTENCES:
            chunks = synthesizer.plan(sentence)
            if len(chunks) != 1:
                raise ValueError(f"{sentence[:30]!r}... does not fit one model call")
            tokens = chunks[0].tokens
            style = np.asarray(synthesizer.voices.style(voice, len(tokens)), dtype=np.float32)
            neighbour = synthesizer.voices.style(voice, len(tokens) + 1)
            row = bench.measure(
                sentence,
                tokens,
                style.reshape(1, -1),
                np.asarray(neighbour, dtype=np.float32).reshape(1, -1),
            )
            rows.append({"text": sentence, "words": len(sentence.split()), **row})
        report = {
            "model": str(config.model_path.name),
            "voice": voice,
            "sentences": rows,
            "machine": machine_facts(synthesizer),
        }
    finally:
        synthesizer.close()
    _print(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _print(report: dict[str, Any]) -> None:
    print(f"model {report['model']}, voice {report['voice']}")
    for row in report["sentences"]:
        print(
            f"{row['words']} words, {row['frames']} frames: whole call {row['whole_ms']} ms, "
            f"text side {row['text_side_ms']} ms, halves differ by "
            f"{row['halves_max_abs_difference']:g}, neighbour-row log-mel "
            f"{row['neighbour_row_log_mel']}, WER {row['wer']}"
        )
        for plan in row["plans"]:
            print(
                f"  first {plan['first_frames']}+{plan['first_lookahead_frames']} / windows "
                f"{plan['window_frames']} / context {plan['context_frames']}: first audio "
                f"{plan['first_audio_ms']} ms "
                f"({plan['first_audio_ratio']}x), SNR {plan['snr_db']} dB, log-mel "
                f"{plan['log_mel']}, WER {plan['wer']}, worst join step "
                f"{plan['join_step_db']} dB ({plan['join_step_db_faded']} with a "
                f"{FADE_FRAMES}-frame fade); with the whole call's norm statistics: SNR "
                f"{plan['whole_statistics_snr_db']} dB, log-mel {plan['whole_statistics_log_mel']}"
            )
    for index in range(len(PLANS)):
        ratios = [row["plans"][index]["first_audio_ratio"] for row in report["sentences"]]
        mels = [row["plans"][index]["log_mel"] for row in report["sentences"]]
        bound = [row["neighbour_row_log_mel"] for row in report["sentences"]]
        print(
            f"plan {PLANS[index]}: median first-audio ratio {statistics.median(ratios)}, "
            f"median log-mel {statistics.median(mels)} against a bound of "
            f"{statistics.median(bound)}"
        )
