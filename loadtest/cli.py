"""``python -m loadtest``: ramp concurrent real-time streams against the server, write a report.

Without ``--server`` a server is started on a free loopback port with this environment (so
``KOKORO_*`` variables configure it) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from loadtest.config import LoadConfig, default_out_dir
from loadtest.ramp import parse_steps
from loadtest.report import MARKDOWN_NAME, summary_lines
from loadtest.run import run_load_test
from loadtest.texts import CORPUS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Ramp concurrent real-time streams against the server and report "
        "latency, underruns, refusals and throughput per step.",
    )
    parser.add_argument("--server", help="http://HOST:PORT of a running server (default: spawn)")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="ramp seconds, split evenly over the steps"
    )
    parser.add_argument(
        "--steps", type=parse_steps, help="users per step, e.g. 1,2,3,4 (default: 1..capacity+2)"
    )
    parser.add_argument(
        "--word-share", type=float, default=0.5, help="fraction of streams sent word by word"
    )
    parser.add_argument("--word-interval-ms", type=float, default=80.0, help="pace of the words")
    parser.add_argument("--voice", help="voice for every stream (default: the server's)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the texts and modes")
    parser.add_argument("--out", type=Path, help="report folder (default: loadtest/results/UTC)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw engine loop")
    parser.add_argument(
        "--raw-texts",
        type=int,
        default=len(CORPUS),
        help="corpus texts the raw engine loop runs (default: all)",
    )
    parser.add_argument("--raw-rounds", type=int, default=1, help="passes of the raw loop")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds running streams may take after the ramp",
    )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> LoadConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return LoadConfig(
            out=args.out or default_out_dir(),
            server=args.server,
            duration_s=args.duration,
            steps=args.steps,
            word_share=args.word_share,
            word_interval_ms=args.word_interval_ms,
            voice=args.voice,
            seed=args.seed,
            raw=not args.no_raw,
            raw_texts=args.raw_texts,
            raw_rounds=args.raw_rounds,
            drain_timeout_s=args.drain_timeout,
        )
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per stats poll
    report = asyncio.run(run_load_test(config))
    print("\n".join(summary_lines(report)))
    print(f"report: {config.out / MARKDOWN_NAME}")
    return 0
