"""Command line: ``say``, ``voices``, ``serve``, ``plan`` and ``bench``.

Every expected failure (a missing model file, an unknown voice, bad text) ends with one line on
standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from app.audio_formats import FORMATS, encode
from app.bench import DEFAULT_RUNS
from app.bench_history import RecordedRun
from app.errors import TTSError
from app.settings import Settings
from app.tts.engine import SAMPLE_RATE
from app.tts.synthesizer import Synthesizer
from app.tts.voices import VoiceBank

EXIT_USAGE = 2
SWAP_TIMEOUT_S = 300
"""A swap builds and warms sessions, then waits for the old ones' running jobs."""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="ONNX model file (default: embedded int8)")
    parser.add_argument("--voices", type=Path, help="voices npz file (default: embedded)")
    parser.add_argument("--cache-dir", type=Path, help="where the default model is assembled")
    parser.add_argument(
        "--variant", help="variant of the embedded model (python -m app variants list)"
    )
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    commands = parser.add_subparsers(dest="command", required=True)

    say = commands.add_parser("say", help="synthesize text into an audio file")
    say.add_argument("text", nargs="?", help="text to speak ('-' reads standard input)")
    say.add_argument("-o", "--output", type=Path, required=True, help="output file")
    say.add_argument("--voice", help="voice or blend, e.g. jf_alpha:0.7+jm_kumo:0.3")
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument(
        "--format", choices=sorted(FORMATS), help="audio format (default: from the file suffix)"
    )
    say.add_argument("--server", help="speak through a running server: ws://HOST:PORT/v1/stream")
    say.add_argument(
        "--stdin", action="store_true", help="with --server: stream standard input line by line"
    )
    say.add_argument("--max-kbps", type=float, help="with --server: imitate a slow link")
    say.add_argument("--latency-ms", type=float, default=0.0, help="with --server: added delay")
    say.add_argument("--jitter-ms", type=float, default=0.0, help="with --server: random delay")
    _add_model_options(say)

    voices = commands.add_parser("voices", help="list the available voices")
    voices.add_argument("--voices", type=Path, help="voices npz file (default: embedded)")
    voices.add_argument("--json", action="store_true", help="print JSON")

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--plan", help="provider plan, e.g. cpu:2x1 (sessions x threads), or auto (default)"
    )
    serve.add_argument(
        "--rebenchmark", action="store_true", help="with --plan auto: ignore the cached choice"
    )
    _add_model_options(serve)

    plan = commands.add_parser("plan", help="switch a running server's provider plan")
    plan.add_argument("plan", help="the new plan, e.g. cpu:2x1 (sessions x threads)")
    plan.add_argument("--server", default="http://127.0.0.1:8000", help="the server's HTTP address")
    plan.add_argument("--token", help="admin token (default: $KOKORO_ADMIN_TOKEN)")

    _add_bench_parsers(commands.add_parser("bench", help="benchmarks"))
    _add_variant_parsers(commands.add_parser("variants", help="model variants: build, report"))
    return parser


def _add_variant_parsers(variants: argparse.ArgumentParser) -> None:
    kinds = variants.add_subparsers(dest="variants_action", required=True)
    kinds.add_parser("list", help="the variants, and which are built")
    build = kinds.add_parser("build", help="build variants of the embedded model")
    build.add_argument("names", nargs="*", help="variants to build (default: all)")
    report = kinds.add_parser("report", help="measure every variant; apply the quality gate")
    report.add_argument("names", nargs="*", help="variants to measure (default: all)")
    report.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    report.add_argument(
        "--out", type=Path, default=Path("docs/variants"), help="where the report goes"
    )
    report.add_argument(
        "--sentences", type=int, default=10, help="quality sentences per voice (at most 10)"
    )
    report.add_argument("--child", help=argparse.SUPPRESS)  # one measurement
    for parser in (build, report, kinds.choices["list"]):
        parser.add_argument("--cache-dir", type=Path, help="where variants are built")


def _add_bench_parsers(bench: argparse.ArgumentParser) -> None:
    bench_kinds = bench.add_subparsers(dest="bench_kind", required=True)
    engine = bench_kinds.add_parser("engine", help="raw synthesis RTF and latency")
    engine.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help="timed runs per text after warm-up (the server's scheduled runs use the default)",
    )
    engine.add_argument("--voice", help="voice to use (default: the default voice)")
    engine.add_argument("--json", type=Path, help="also write the JSON report to this file")
    engine.add_argument(
        "--no-record", action="store_true", help="do not add the run to the benchmark history"
    )
    _add_model_options(engine)
    stream = bench_kinds.add_parser("stream", help="streamed TTFA against raw engine time")
    stream.add_argument("--rounds", type=int, default=5, help="rounds of the three streams")
    stream.add_argument("--json", type=Path, help="also write the JSON report to this file")
    _add_model_options(stream)
    memory = bench_kinds.add_parser("memory", help="memory and speed under each memory setting")
    memory.add_argument(
        "--caps", default="510,256,128", help="comma-separated KOKORO_MAX_SEGMENT_TOKENS values"
    )
    memory.add_argument(
        "--shrinkage", default="off", help="arena shrinkage after each call: on, off or on,off"
    )
    memory.add_argument("--rounds", type=int, default=3, help="fresh processes per setting")
    memory.add_argument("--runs", type=int, default=2, help="syntheses per process")
    memory.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement
    _add_model_options(memory)
    timestamps = bench_kinds.add_parser(
        "timestamps", help="word timings against Whisper tiny.en's word timestamps"
    )
    timestamps.add_argument(
        "--voice",
        action="append",
        help="a voice to measure; repeat for several (default: jf_alpha and jm_kumo)",
    )
    timestamps.add_argument("--json", type=Path, help="also write the JSON report to this file")
    _add_model_options(timestamps)
    windowed = bench_kinds.add_parser(
        "windowed", help="first audio from the decoder run on windows of frames (research)"
    )
    windowed.add_argument("--json", type=Path, help="also write the JSON report to this file")
    _add_model_options(windowed)
    first = bench_kinds.add_parser(
        "first-segment", help="streamed first audio of a sentence in each first-segment mode"
    )
    first.add_argument("--rounds", type=int, default=3, help="rounds of three sentences")
    first.add_argument("--plan", default="cpu:1x2", help="the server's provider plan")
    first.add_argument("--json", type=Path, help="also write the JSON report to this file")
    _add_model_options(first)
    soak = bench_kinds.add_parser("soak", help="server memory over many mixed requests")
    soak.add_argument("--requests", type=int, default=500, help="requests after the warm-up")
    soak.add_argument("--concurrency", type=int, default=2, help="requests at a time")
    soak.add_argument("--plan", default="auto", help="the server's provider plan")
    soak.add_argument("--json", type=Path, help="also write the JSON report to this file")
    _add_model_options(soak)


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment defaults overridden by whichever flags were given."""
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "model_path": getattr(args, "model", None),
        "voices_path": getattr(args, "voices", None),
        "cache_dir": getattr(args, "cache_dir", None),
        "variant": getattr(args, "variant", None),
        "intra_op_threads": getattr(args, "threads", None),
        "plan": getattr(args, "plan", None),
        "rebenchmark": getattr(args, "rebenchmark", None) or None,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(Settings.from_env(), **given)


def _format_for(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    if suffix in {"ogg", "oga"}:
        return "opus"
    raise ValueError(f"cannot tell the audio format from {path.name!r}; use --format")


def cmd_say(args: argparse.Namespace, settings: Settings) -> int:
    format_name = _format_for(args.output, args.format)
    if args.server:
        return _say_remote(args, format_name)
    if args.stdin or args.max_kbps or args.latency_ms or args.jitter_ms:
        raise ValueError("--stdin and the network options need --server")
    if args.text is None:
        raise ValueError("give the text to speak, or '-' to read standard input")
    text = sys.stdin.read() if args.text == "-" else args.text
    synthesizer = Synthesizer.load(settings)
    try:
        result = synthesizer.speak_blocking(text, args.voice or settings.default_voice, args.speed)
    finally:
        synthesizer.close()
    args.output.write_bytes(encode(result.audio, SAMPLE_RATE, format_name))
    print(
        f"wrote {args.output} ({result.audio_seconds:.2f} s of audio in "
        f"{result.gen_seconds:.2f} s, RTF {result.rtf:.2f})",
        file=sys.stderr,
    )
    return 0


def _say_remote(args: argparse.Namespace, format_name: str) -> int:
    import asyncio  # noqa: PLC0415

    from app.client import NetworkShape  # noqa: PLC0415
    from app.remote_say import print_report, remote_say, write_audio  # noqa: PLC0415

    if args.stdin == (args.text is not None):
        raise ValueError("give either the text or --stdin")
    if args.max_kbps is not None and args.max_kbps <= 0:
        raise ValueError("--max-kbps must be positive")
    shape = NetworkShape(args.max_kbps, args.latency_ms, args.jitter_ms)
    text = None if args.stdin else (sys.stdin.read() if args.text == "-" else args.text)
    report, audio = asyncio.run(
        remote_say(args.server, text, voice=args.voice, speed=args.speed, shape=shape)
    )
    write_audio(audio, args.output, format_name)
    print_report(report, args.output)
    return 0 if report.reason == "complete" else 1


def cmd_voices(args: argparse.Namespace, settings: Settings) -> int:
    bank = VoiceBank.load(settings.voices_path)
    infos = bank.infos()
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
    else:
        for info in infos:
            print(f"{info.name:<20} {info.language:<8} {info.gender}")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.plan_loader import load_for_serving  # noqa: PLC0415  (only the server needs it)
    from app.server import create_app  # noqa: PLC0415
    from app.uvicorn_server import GracefulServer, uvicorn_config  # noqa: PLC0415

    synthesizer, plan_choice = load_for_serving(settings)
    fatal: list[str] = []
    server: GracefulServer | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(
        settings,
        synthesizer,
        on_fatal,
        plan_choice,
        startup_seconds=plan_choice.load_phases(synthesizer),
    )
    config = uvicorn_config(
        app,
        settings,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        lifespan="on",
    )
    server = GracefulServer(config, app.state.service)
    try:
        server.run()
    finally:
        synthesizer.close()
    if fatal:
        print(f"error: {fatal[0]}", file=sys.stderr)
        return 1
    return 0


def describe_verdict(run: RecordedRun) -> str:
    """One line: the run's figure and how it compares (see app.regression)."""
    verdict = run.verdict
    if verdict.baseline is None:
        judged = "too few earlier runs to judge"
    else:
        judged = (
            f"baseline {verdict.baseline:.4f}, change {verdict.change:+.1%}, "
            f"{'REGRESSION' if verdict.regression else 'within'} "
            f"the {verdict.tolerance:.0%} tolerance"
        )
    return f"median RTF {verdict.value:.4f}; {judged}"


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(f"expected on or off, got {value!r}")
    return value == "on"


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from app.bench import EngineBenchmark, environment, record_run, run_engine_bench  # noqa: PLC0415
    from app.bench_history import HISTORY_FILE, BenchHistory  # noqa: PLC0415

    if args.bench_kind == "memory":
        from app.bench_memory import child, run_memory_bench  # noqa: PLC0415

        shrinkages = [_on_off(value) for value in args.shrinkage.split(",")]
        if args.child is not None:
            child(settings, args.child, shrinkages[0], args.runs)
        else:
            caps = [int(cap) for cap in args.caps.split(",")]
            run_memory_bench(settings, caps, shrinkages, args.rounds, args.runs)
        return 0
    if args.bench_kind == "soak":
        from app.bench_soak import run_soak_bench  # noqa: PLC0415

        if args.requests < 1 or args.concurrency < 1:
            raise ValueError("--requests and --concurrency must be at least 1")
        held = run_soak_bench(
            dataclasses.replace(settings, plan=args.plan),
            args.requests,
            args.concurrency,
            args.json,
        )
        return 0 if held else 1
    if args.bench_kind == "first-segment":
        from app.bench_first_segment import run_first_segment_bench  # noqa: PLC0415

        run_first_segment_bench(settings, args.rounds, args.plan, args.json)
        return 0
    if args.bench_kind == "windowed":
        from app.bench_windowed import run_windowed_bench  # noqa: PLC0415

        run_windowed_bench(settings, args.json)
        return 0
    if args.bench_kind == "timestamps":
        from app.bench_timestamps import run_timestamps_bench  # noqa: PLC0415

        run_timestamps_bench(settings, args.voice or ["jf_alpha", "jm_kumo"], args.json)
        return 0
    if args.bench_kind == "stream":
        from app.bench_stream import run_stream_bench  # noqa: PLC0415

        if args.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        run_stream_bench(settings, args.rounds, args.json)
        return 0
    if args.runs < 1:
        raise ValueError("--runs must be at least 1")
    synthesizer = Synthesizer.load(settings)
    voice = args.voice or settings.default_voice
    definition = EngineBenchmark(runs=args.runs)
    try:
        _, rows = run_engine_bench(synthesizer, definition, voice, args.json)
        if not args.no_record:
            history = BenchHistory(settings.cache_dir / HISTORY_FILE)
            facts = environment(definition, synthesizer, synthesizer.engine, voice)
            run = record_run(history, rows, facts)
            print(f"recorded in {history.path}: {describe_verdict(run)}", file=sys.stderr)
    finally:
        synthesizer.close()
    return 0


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """POST the plan to the admin API and print the swap report."""
    token = args.token or settings.admin_token
    if not token:
        raise ValueError("an admin token is needed: --token or KOKORO_ADMIN_TOKEN")
    request = urllib.request.Request(
        args.server.rstrip("/") + "/v1/admin/plan",
        data=json.dumps({"plan": args.plan}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=SWAP_TIMEOUT_S) as response:
            print(json.dumps(json.load(response), indent=2))
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("error", {})
        message = detail.get("message", error.reason)
        raise ValueError(f"{error.code} {detail.get('code', '')}: {message}") from None
    return 0


def cmd_variants(args: argparse.Namespace, settings: Settings) -> int:
    from app.tts.variants import VARIANTS, VariantStore  # noqa: PLC0415

    store = VariantStore(settings.cache_dir)
    names = list(getattr(args, "names", None) or VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.variants_action == "list":
        for name, variant in VARIANTS.items():
            built = "built" if variant.base is None or store.is_current(name) else "not built"
            print(f"{name:16} {built:10} {variant.summary}")
        return 0
    if args.variants_action == "build":
        for name in names:
            print(f"{name}: {store.ensure(name, progress=True)}")
        return 0
    from app.variant_report import child_measure, run_report  # noqa: PLC0415

    if args.child is not None:
        print(json.dumps(child_measure(settings, args.child)))
        return 0
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    report = run_report(settings, names, args.rounds, args.out, sentences=args.sentences)
    print((args.out / "variants.md").read_text())
    return 0 if report["fastest_passing"] else 1


COMMANDS = {
    "say": cmd_say,
    "voices": cmd_voices,
    "serve": cmd_serve,
    "plan": cmd_plan,
    "bench": cmd_bench,
    "variants": cmd_variants,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
        return COMMANDS[args.command](args, settings)
    except (TTSError, ValueError, OSError) as error:
        message = error.message if isinstance(error, TTSError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
