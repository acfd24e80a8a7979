"""Server settings: one frozen record, filled from the command line or ``KOKORO_*`` variables.

Command-line flags win over environment variables, which win over the defaults here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from app.access import parse_hosts, parse_origins
from app.tts.chunking import MAX_TOKENS

ENV_PREFIX = "KOKORO_"

FirstSegment = Literal["short", "sentence", "windowed"]
FIRST_SEGMENTS: tuple[FirstSegment, ...] = ("short", "sentence", "windowed")


def default_cache_dir() -> Path:
    """Where the assembled default model is kept: ``$XDG_CACHE_HOME/kokoro-stream``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kokoro-stream"


def _env(name: str) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value else None


def _env_path(name: str) -> Path | None:
    value = _env(name)
    return Path(value) if value else None


def _env_float(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number, got {value!r}") from None


def _env_seconds(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not 0 <= value < float("inf"):
        raise ValueError(f"{ENV_PREFIX}{name} must be a number of seconds >= 0, got {value!r}")
    return value


def _env_positive_seconds(name: str, default: float) -> float:
    value = _env_seconds(name, default)
    if value <= 0:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number of seconds > 0, got {value!r}")
    return value


def _env_first_segment(default: FirstSegment) -> FirstSegment:
    value = _env("FIRST_SEGMENT")
    if value is None:
        return default
    for choice in FIRST_SEGMENTS:
        if value.lower() == choice:
            return choice
    raise ValueError(
        f"{ENV_PREFIX}FIRST_SEGMENT must be one of {', '.join(FIRST_SEGMENTS)}, got {value!r}"
    )


def _env_flag(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_PREFIX}{name} must be 1/0, true/false, yes/no or on/off, got {value!r}")


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be an integer, got {value!r}") from None


def _env_port(name: str, default: int) -> int:
    value = _env_int(name, default)
    if not 0 <= value <= 65535:
        raise ValueError(f"{ENV_PREFIX}{name} must be a TCP port (0 to 65535), got {value}")
    return value


def _env_megabytes(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value < 0:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number of megabytes >= 0, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that changes how the server loads the model and answers requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_path: Path | None = None
    """A user's ONNX model; ``None`` selects the embedded int8 Kokoro model."""
    voices_path: Path | None = None
    """A user's voices file (npz of (510, 1, 256) packs); ``None`` selects the embedded voices."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    intra_op_threads: int = 2
    """ONNX Runtime threads per inference; 0 lets ONNX Runtime pick one per core."""
    spin_wait: bool = True
    """ONNX Runtime's threads spin while waiting for work; off gives the CPU to the rest of a
    busy or shared machine (see EngineConfig.spin_wait)."""
    arena_shrinkage: bool = False
    """Give the inference arena's free memory back after every model call: less resident
    memory between calls, up to 11% slower synthesis (see EngineConfig)."""
    first_segment: FirstSegment = "short"
    """How a stream's first segment is cut and decoded. ``short``: at most two words (or 12
    characters), for the earliest first audio. ``sentence``: the whole first sentence (up to
    40 words), one model call with the sentence's prosody, first audio later. ``windowed``: the
    whole first sentence, its audio started from a first window of frames before the rest is
    decoded (``app.tts.first_window``)."""
    max_segment_tokens: int = MAX_TOKENS
    """Longest model call in tokens; longer text is split at clause or word boundaries. A call's
    activation memory grows with its length (64..510)."""
    variant: str = ""
    """Model variant of the embedded model (``python -m app variants list``); empty: the default
    (``app.tts.variants.DEFAULT_VARIANT``). Not with ``model_path``."""
    memory_limit_mb: int = 0
    """Resident memory the server may use; 0: only the cgroup's and the machine's limits. Near
    the tightest limit the server shrinks arenas, halves capacity, then refuses new streams
    (see ``app.memory_pressure``)."""
    default_voice: str = "jm_kumo"
    max_input_chars: int = 4096
    """Longest text accepted by ``POST /v1/audio/speech`` (OpenAI's limit)."""
    max_queued_requests: int = 16
    """HTTP synthesis requests admitted at once (running or waiting); more get 503 busy."""
    max_lead_ms: int = 2000
    """Audio a stream may hold ahead of its client's playback before it stops being served
    first (it may still be served from spare capacity, up to ``work_ahead_ms``)."""
    work_ahead_ms: int = 20_000
    """Audio a stream may hold ahead when a session would otherwise be idle; 0 turns it off."""
    max_active_streams: int = 0
    """Streams synthesizing at once; 0 derives it from the sessions' measured throughput."""
    admission_utilization: float = 0.6
    """With ``max_active_streams=0``: the share of measured throughput streams may use."""
    admission_wait_ms: int = 0
    """How long a stream beyond capacity waits for a slot before ``busy``; 0 answers at once."""
    max_streams_per_connection: int = 8
    max_stream_chars: int = 20_000
    """Text one WebSocket stream may carry in all."""
    max_message_bytes: int = 64 * 1024
    idle_timeout_s: float = 60.0
    """A connection with no stream and no message for this long is closed."""
    stream_idle_s: float = 30.0
    """A stream that receives no text (or flush) for this long is ended as if the client had
    sent ``end``: what it has is spoken, then ``done`` (reason ``timeout``) and its synthesis
    slot is free."""
    max_body_bytes: int = 64 * 1024
    """Largest HTTP request body; a larger one is refused (413) before it is read or parsed."""
    request_timeout_s: float = 5.0
    """How long a connection may take to send a request's head (from connecting, or from the
    previous response), and then its body; a slower one is closed."""
    plan: str = "auto"
    """Provider plan (``cpu:1x2``: provider, sessions x threads), or ``auto`` to pick the best
    candidate by benchmark (cached; see ``app.strategy``)."""
    rebenchmark: bool = False
    """With ``plan=auto``: benchmark even if the cached choice is still valid."""
    strategy_ttl_s: float = 7 * 24 * 3600.0
    """How long a cached plan choice stays valid."""
    inference_timeout_s: float = 30.0
    """An inference call taking longer is abandoned and retried on another session."""
    probe_after_s: float = 5.0
    """A failed inference session is probed this long after the failure (then backing off)."""
    bench_interval_s: float = 3600.0
    """How often the server runs the engine benchmark while idle; 0 turns it off."""
    bench_quiet_s: float = 30.0
    """How long the server must have been idle before a benchmark step starts."""
    trace_text: bool = False
    """Put segments' text in trace spans (off: user text stays out of traces)."""
    admin_token: str | None = field(default=None, repr=False)
    """Bearer token of the admin API (``/v1/admin/...``); without one the admin API is off."""
    api_key: str | None = field(default=None, repr=False)
    """Key clients must present (``Authorization: Bearer`` or a ``bearer.<key>`` subprotocol;
    see ``app.access``); without one, whoever reaches the port may use it."""
    allowed_origins: frozenset[str] = frozenset()
    """Browser origins allowed besides the server's own (``*``: any); see ``app.access``."""
    allowed_hosts: frozenset[str] = frozenset()
    """Host names the server answers to besides loopback names, addresses and ``host``
    (``*.example.com``: subdomains; ``*``: any); see ``app.access``."""
    max_streams_per_client: int = 16
    """Streams one client address may have open over all its connections."""
    max_messages_per_s: float = 200.0
    """Messages one connection may send per second, in bursts of up to as many; more are
    answered ``rate_limited`` and dropped."""
    ping_interval_s: float = 20.0
    """How often the server pings each WebSocket; 0 turns pings off."""
    ping_timeout_s: float = 20.0
    """A WebSocket whose pong is this late is closed (a dead peer or link)."""
    agent_port: int = 0
    """TCP port of the load-balancer agent (HAProxy ``agent-check``: free capacity as a weight,
    see ``app.capacity_agent``); 0 turns it off."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM: how long streams in progress may take to finish before they are ended with
    ``done`` (reason ``shutdown``); new connections and streams are refused meanwhile."""

    def __post_init__(self) -> None:
        if not (self.stream_idle_s > 0 and self.request_timeout_s > 0):
            raise ValueError("stream_idle_s and request_timeout_s must be > 0 seconds")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults overridden by ``KOKORO_*`` environment variables."""
        defaults = cls()
        return cls(
            host=_env("HOST") or defaults.host,
            port=_env_int("PORT", defaults.port),
            model_path=_env_path("MODEL"),
            voices_path=_env_path("VOICES"),
            cache_dir=_env_path("CACHE_DIR") or defaults.cache_dir,
            intra_op_threads=_env_int("THREADS", defaults.intra_op_threads),
            first_segment=_env_first_segment(defaults.first_segment),
            max_segment_tokens=_env_int("MAX_SEGMENT_TOKENS", defaults.max_segment_tokens),
            variant=_env("VARIANT") or defaults.variant,
            memory_limit_mb=_env_megabytes("MEMORY_LIMIT_MB", defaults.memory_limit_mb),
            arena_shrinkage=_env_flag("ARENA_SHRINKAGE", defaults.arena_shrinkage),
            spin_wait=_env_flag("SPIN_WAIT", defaults.spin_wait),
            default_voice=_env("DEFAULT_VOICE") or defaults.default_voice,
            max_input_chars=_env_int("MAX_INPUT_CHARS", defaults.max_input_chars),
            max_queued_requests=_env_int("MAX_QUEUED_REQUESTS", defaults.max_queued_requests),
            max_lead_ms=_env_int("MAX_LEAD_MS", defaults.max_lead_ms),
            work_ahead_ms=_env_int("WORK_AHEAD_MS", defaults.work_ahead_ms),
            max_active_streams=_env_int("MAX_ACTIVE_STREAMS", defaults.max_active_streams),
            admission_utilization=_env_float(
                "ADMISSION_UTILIZATION", defaults.admission_utilization
            ),
            admission_wait_ms=_env_int("ADMISSION_WAIT_MS", defaults.admission_wait_ms),
            max_streams_per_connection=_env_int(
                "MAX_STREAMS_PER_CONNECTION", defaults.max_streams_per_connection
            ),
            max_stream_chars=_env_int("MAX_STREAM_CHARS", defaults.max_stream_chars),
            max_message_bytes=_env_int("MAX_MESSAGE_BYTES", defaults.max_message_bytes),
            idle_timeout_s=float(_env_int("IDLE_TIMEOUT_S", int(defaults.idle_timeout_s))),
            stream_idle_s=_env_positive_seconds("STREAM_IDLE_S", defaults.stream_idle_s),
            max_body_bytes=_env_int("MAX_BODY_BYTES", defaults.max_body_bytes),
            request_timeout_s=_env_positive_seconds(
                "REQUEST_TIMEOUT_S", defaults.request_timeout_s
            ),
            plan=_env("PLAN") or defaults.plan,
            strategy_ttl_s=_env_float("STRATEGY_TTL_S", defaults.strategy_ttl_s),
            inference_timeout_s=_env_float("INFERENCE_TIMEOUT_S", defaults.inference_timeout_s),
            probe_after_s=_env_float("PROBE_AFTER_S", defaults.probe_after_s),
            admin_token=_env("ADMIN_TOKEN"),
            api_key=_env("API_KEY"),
            allowed_origins=parse_origins(_env("ALLOWED_ORIGINS") or ""),
            allowed_hosts=parse_hosts(_env("ALLOWED_HOSTS") or ""),
            max_streams_per_client=_env_int(
                "MAX_STREAMS_PER_CLIENT", defaults.max_streams_per_client
            ),
            max_messages_per_s=_env_float("MAX_MESSAGES_PER_S", defaults.max_messages_per_s),
            ping_interval_s=_env_seconds("PING_INTERVAL_S", defaults.ping_interval_s),
            ping_timeout_s=_env_seconds("PING_TIMEOUT_S", defaults.ping_timeout_s),
            shutdown_grace_s=_env_seconds("SHUTDOWN_GRACE_S", defaults.shutdown_grace_s),
            agent_port=_env_port("AGENT_PORT", defaults.agent_port),
            trace_text=(_env("TRACE_TEXT") or "").lower() in ("1", "true", "yes"),
            bench_interval_s=_env_seconds("BENCH_INTERVAL_S", defaults.bench_interval_s),
            bench_quiet_s=_env_seconds("BENCH_QUIET_S", defaults.bench_quiet_s),
        )
