"""``python -m app variants report``: every variant measured in one run, and the quality gate.

Measured per variant, on this machine, in one run:

- file size; session load time and peak resident memory, each in a fresh child process (so the
  figures are the variant's own), the variants taking turns ``rounds`` times;
- speed in this process, all variants loaded and taking turns text by text, round by round (the
  machine's speed drifts by 10% or more within minutes; interleaving spreads a slow spell over
  all of them): first-segment latency (a short sentence, the typical first segment of a stream)
  and RTF (a sentence and a paragraph);
- quality: Whisper tiny.en word error rate on ``QUALITY_SENTENCES`` in two voices, and the
  log-mel distance of each utterance to the shipped graph's.

The gate: a variant may be the default only if its WER is within 1 point of the shipped graph's
and its mean log-mel distance to the shipped graph is at most the distance between the shipped
graph's own outputs with two neighbouring style rows (the row a voice uses changes with the
utterance's length, one row per token: a difference listeners already hear between a sentence
and the same sentence one token longer).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bench import BENCH_TEXTS
from app.process import peak_rss_bytes, rss_bytes
from app.quality import Transcriber, log_mel_distance, word_error_rate
from app.settings import Settings
from app.tts.chunking import Chunker
from app.tts.engine import Engine, EngineConfig, load_graph
from app.tts.normalize import normalize
from app.tts.phonemes import Phonemizer, Tokenizer, load_vocab, pause_token_ids
from app.tts.variants import SHIPPED, VariantStore, tail_frames_of
from app.tts.voices import VoiceBank

QUALITY_VOICES = ("jm_kumo", "jf_alpha")
QUALITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Can you tell me where the nearest train station is?",
    "The meeting starts at ten thirty and should take about forty five minutes.",
    "My grandmother was born in a small village by the sea.",
    "Please remember to water the plants while I am away.",
    "Extraordinary circumstances required immediate attention from the committee.",
    "Our train leaves at nine in the morning, so please pack your bags tonight.",
    "He cleaned the great lens, trimmed the wick, and watched the ships pass far out at sea.",
    "Scientists have discovered a new species of frog in the rainforest.",
    "If it rains tomorrow, we will stay at home and read our books.",
)
WER_MARGIN = 0.01
RTF_TEXTS = ("sentence", "paragraph")


@dataclass(frozen=True, slots=True)
class Utterance:
    text: str
    voice: str


def utterances(sentences: int = len(QUALITY_SENTENCES)) -> list[Utterance]:
    """The first ``sentences`` quality sentences in every quality voice."""
    texts = QUALITY_SENTENCES[:sentences]
    return [Utterance(text, voice) for voice in QUALITY_VOICES for text in texts]


class Speaker:
    """Text to model inputs (the server's normaliser, G2P, chunker and voices), for any engine."""

    def __init__(self, voices_path: Path | None = None) -> None:
        vocab = load_vocab()
        self.voices = VoiceBank.load(voices_path)
        self.chunker = Chunker(Phonemizer("en-us").phonemize, Tokenizer(vocab).encode)
        self.pause_tokens = pause_token_ids(vocab)

    def engine(self, path: Path, tail_frames: int | None = None) -> Engine:
        config = EngineConfig(
            path, intra_op_threads=2, pause_tokens=self.pause_tokens, tail_frames=tail_frames
        )
        return Engine(config, load_graph(path))

    def say(
        self, engine: Engine, text: str, voice: str, style_offset: int = 0
    ) -> tuple[npt.NDArray[np.float32], float]:
        """Audio and model seconds; ``style_offset`` picks a neighbouring style row."""
        pieces, seconds = [], 0.0
        for chunk in self.chunker.split(normalize(text).text):
            style = self.voices.style(voice, len(chunk.tokens) + style_offset)
            result = engine.synthesize(chunk.tokens, style, 1.0)
            pieces.append(result.audio)
            seconds += result.gen_seconds
        return np.concatenate(pieces), seconds


def child_measure(settings: Settings, name: str) -> dict[str, float]:
    """In a fresh process: session load time, and peak resident memory over loading and one
    paragraph (the front end is loaded first, so its share is the same for every variant)."""
    path = VariantStore(settings.cache_dir).ensure(name)
    speaker = Speaker(settings.voices_path)
    speaker.chunker.split(normalize("Warm up the phonemizer.").text)
    started = time.perf_counter()
    engine = speaker.engine(path, tail_frames_of(name))
    load_seconds = time.perf_counter() - started
    speaker.say(engine, BENCH_TEXTS["paragraph"], "jm_kumo")
    peak = peak_rss_bytes() or rss_bytes()
    engine.close()
    return {"load_seconds": load_seconds, "peak_rss_mb": peak / 2**20}


def _in_child(settings: Settings, name: str) -> dict[str, float]:
    command = [sys.executable, "-m", "app", "variants", "report", "--child", name]
    command += ["--cache-dir", str(settings.cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def measure_processes(
    settings: Settings, names: Sequence[str], rounds: int
) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(_in_child(settings, name))
    return {
        name: {key: statistics.median(run[key] for run in found) for key in found[0]}
        for name, found in runs.items()
    }


def measure_speed(
    speaker: Speaker, engines: dict[str, Engine], rounds: int
) -> dict[str, dict[str, float]]:
    """Per variant, medians over rounds: first-segment latency (the short text), RTF (sentence
    and paragraph) and the model seconds the three texts take together, which is what a
    variant saves (a variant that renders less silence makes less audio: its RTF can rise
    while it is faster). Variants take turns text by text, in a rotated order each round."""
    texts = ("short", *RTF_TEXTS)
    seconds: dict[str, dict[str, list[float]]] = {
        name: {text: [] for text in texts} for name in engines
    }
    rtfs: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():  # warm-up
        speaker.say(engine, BENCH_TEXTS["short"], "jm_kumo")
    order = list(engines)
    for round_index in range(rounds):
        turn = order[round_index % len(order) :] + order[: round_index % len(order)]
        for text in texts:
            for name in turn:
                samples, took = speaker.say(engines[name], BENCH_TEXTS[text], "jm_kumo")
                seconds[name][text].append(took)
                if text in RTF_TEXTS:
                    rtfs[name].append(took / (len(samples) / 24_000))
    return {
        name: {
            "first_segment_ms": statistics.median(seconds[name]["short"]) * 1000,
            "rtf": statistics.median(rtfs[name]),
            "text_seconds": sum(statistics.median(seconds[name][text]) for text in texts),
        }
        for name in engines
    }


def measure_quality(
    speaker: Speaker, engines: dict[str, Engine], transcriber: Transcriber, sentences: int
) -> tuple[dict[str, dict[str, float]], float]:
    """WER and mean log-mel distance to the shipped graph per variant; and the bound."""
    spoken = utterances(sentences)
    shipped = engines[SHIPPED]
    reference = [speaker.say(shipped, u.text, u.voice)[0] for u in spoken]
    neighbour = [speaker.say(shipped, u.text, u.voice, style_offset=1)[0] for u in spoken]
    bound = statistics.fmean(
        log_mel_distance(a, b) for a, b in zip(neighbour, reference, strict=True)
    )
    results = {}
    for name, engine in engines.items():
        audios = (
            reference
            if name == SHIPPED
            else [speaker.say(engine, u.text, u.voice)[0] for u in spoken]
        )
        hypotheses = [transcriber.transcribe(audio) for audio in audios]
        results[name] = {
            "wer": word_error_rate([u.text for u in spoken], hypotheses),
            "log_mel_distance": statistics.fmean(
                log_mel_distance(a, b) for a, b in zip(audios, reference, strict=True)
            ),
        }
    return results, bound


def run_report(
    settings: Settings,
    names: Sequence[str],
    rounds: int,
    out: Path,
    *,
    sentences: int = len(QUALITY_SENTENCES),
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``names`` (and the shipped graph) and write ``variants.{json,md,png}`` to ``out``;
    ``sentences``: how many of the quality sentences to use (all, for a real report)."""
    store = VariantStore(settings.cache_dir)
    paths = {name: store.ensure(name, progress=progress) for name in names}
    if SHIPPED not in paths:
        paths = {SHIPPED: store.ensure(SHIPPED), **paths}
    started = time.perf_counter()
    processes = measure_processes(settings, list(paths), rounds)
    speaker = Speaker(settings.voices_path)
    engines = {name: speaker.engine(path, tail_frames_of(name)) for name, path in paths.items()}
    try:
        speed = measure_speed(speaker, engines, rounds)
        quality, bound = measure_quality(speaker, engines, Transcriber(), sentences)
    finally:
        for engine in engines.values():
            engine.close()
    shipped_wer = quality[SHIPPED]["wer"]
    rows: list[dict[str, Any]] = []
    for name, path in paths.items():
        row: dict[str, Any] = {
            "variant": name,
            "bytes": path.stat().st_size,
            **processes[name],
            **speed[name],
            **quality[name],
        }
        row["passes"] = (
            row["wer"] <= shipped_wer + WER_MARGIN + 1e-9 and row["log_mel_distance"] <= bound
        )
        row["speedup"] = speed[SHIPPED]["text_seconds"] / speed[name]["text_seconds"]
        rows.append(row)
    passing = [row for row in rows if row["passes"]]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "platform": platform.platform(),
        "command": " ".join(["python -m app variants report", *sys.argv[3:]]),
        "rounds": rounds,
        "utterances": len(utterances(sentences)),
        "seconds": round(time.perf_counter() - started, 1),
        "distance_bound": bound,
        "wer_limit": shipped_wer + WER_MARGIN,
        "rows": rows,
        "fastest_passing": (
            min(passing, key=lambda row: row["text_seconds"])["variant"] if passing else None
        ),
        "smallest_passing": min(passing, key=lambda row: row["bytes"])["variant"]
        if passing
        else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "variants.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "variants.md").write_text(markdown(report))
    chart(report, out / "variants.png")
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Measured {report['machine']} ({report['platform']}), {report['rounds']} rounds, "
        f"`{report['command']}`.",
        "",
        "| variant | MB | load s | peak RSS MB | first segment ms | RTF | model s, 3 texts | "
        "speed vs int8 | WER | log-mel distance dB | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['variant']} | {row['bytes'] / 2**20:.1f} | {row['load_seconds']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {row['first_segment_ms']:.0f} | {row['rtf']:.3f} | "
            f"{row['text_seconds']:.2f} | {row['speedup']:.2f}x | {row['wer']:.3f} | "
            f"{row['log_mel_distance']:.2f} | {'pass' if row['passes'] else 'fail'} |"
        )
    lines += [
        "",
        f"Gate: WER at most {report['wer_limit']:.3f} (the shipped graph's + 1 point) and log-mel "
        f"distance at most {report['distance_bound']:.2f} dB (the shipped graph against itself "
        "with the neighbouring style row).",
        f"Fastest passing: {report['fastest_passing']}; smallest passing: "
        f"{report['smallest_passing']}.",
    ]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = report["rows"]
    figure, (speed, quality) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [row["variant"] for row in rows]
    colours = ["tab:green" if row["passes"] else "tab:red" for row in rows]
    speed.barh(names, [row["speedup"] for row in rows], color=colours)
    speed.axvline(1.0, color="grey", linestyle="--")
    speed.set_xlabel("speed against the shipped int8 graph (model time for the same texts)")
    speed.set_title("green: passes the quality gate", fontsize=9)
    speed.invert_yaxis()
    quality.scatter(
        [row["log_mel_distance"] for row in rows], [row["wer"] for row in rows], c=colours
    )
    for row in rows:
        quality.annotate(row["variant"], (row["log_mel_distance"], row["wer"]), fontsize=8)
    quality.axvline(report["distance_bound"], color="grey", linestyle="--")
    quality.set_xlabel("log-mel distance to int8, dB (dashed: the bound)")
    quality.axhline(report["wer_limit"], color="grey", linestyle=":")
    quality.set_ylabel("Whisper tiny.en WER (dotted: the limit)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
