"""HTTP endpoints: OpenAI-compatible speech, voices, liveness, readiness and the admin API."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import degradation, regression
from app.access import AccessPolicy
from app.audio_formats import FORMATS, encode
from app.bench_history import HISTORY_FILE, BenchHistory
from app.errors import BusyError, RetryLaterError, TextTooLongError, TTSError
from app.http_request import BodyRefused, read_body, unless_disconnected
from app.pipeline import Pipeline
from app.plan_loader import PlanChoice
from app.prometheus_metrics import CONTENT_TYPE
from app.service import Phase, Service
from app.tts.engine import SAMPLE_RATE
from app.tts.normalize import normalize
from app.tts.synthesizer import MAX_SPEED, MIN_SPEED, SpeechResult
from app.tts.variants import variant_of

MODEL_NAMES = ("kokoro", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""Accepted ``model`` values: ours, and OpenAI's names so that OpenAI clients work unchanged."""

ResponseFormat = Literal["wav", "pcm", "flac", "mp3", "opus"]


class SpeechRequest(BaseModel):
    """OpenAI's ``/v1/audio/speech`` body; unknown fields (e.g. ``instructions``) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=False)

    model: Literal["kokoro", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"] = "kokoro"
    input: str = Field(min_length=1)
    voice: str | None = None
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    response_format: ResponseFormat = "wav"
    timestamps: Literal["none", "word"] = "none"
    """``word``: answer with JSON holding the audio (base64) and each word's timing."""


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """OpenAI-style error body: ``{"error": {"code", "message"}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def tts_error_response(error: TTSError) -> JSONResponse:
    """The answer to a refused request; a retryable one says when to retry (``Retry-After``
    in whole seconds, and ``retry_after_ms`` in the body where the server estimated it)."""
    if not error.retryable:
        return error_response(error.http_status, error.code, error.message)
    retry_ms = error.retry_after_ms if isinstance(error, RetryLaterError) else 1000
    body = {"error": {"code": error.code, "message": error.message, "retry_after_ms": retry_ms}}
    headers = {"Retry-After": str(max(1, math.ceil(retry_ms / 1000)))}
    return JSONResponse(body, error.http_status, headers=headers)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def speech(request: Request) -> Response:
    service = _service(request)
    settings = service.settings
    try:
        body = await _json_body(request, settings.max_body_bytes, settings.request_timeout_s)
        req = SpeechRequest.model_validate(body)
    except BodyRefused as refused:
        return error_response(refused.status, refused.code, refused.message)
    except ValidationError as error:
        return error_response(422, "invalid_request", _describe(error))
    except ClientDisconnect:
        return _client_gone()
    voice = req.voice or settings.default_voice
    timestamps = req.timestamps == "word"
    if service.request_slots.locked():
        full = BusyError("too many synthesis requests in progress", retry_after_ms=1000)
        return tts_error_response(full)
    async with service.request_slots:
        try:
            service.drain.check()
            synthesizer = service.synthesizer
            synthesizer.check_request(voice, req.speed, timestamps=timestamps)
            normalized = await asyncio.to_thread(normalize, req.input)
            _check_spoken_length(normalized.text, len(req.input), settings.max_input_chars)
            # A slot of the streams' capacity: streams already synthesizing keep their share
            async with service.pipeline.whole_text(len(normalized.text)):
                speaking = synthesizer.speak(normalized, voice, req.speed, timestamps=timestamps)
                result = await unless_disconnected(request, speaking)
        except TTSError as error:
            return tts_error_response(error)
        except ClientDisconnect:
            return _client_gone()
        data = await asyncio.to_thread(encode, result.audio, SAMPLE_RATE, req.response_format)
    headers = {
        "X-Audio-Seconds": f"{result.audio_seconds:.3f}",
        "X-Generation-Seconds": f"{result.gen_seconds:.3f}",
    }
    if req.timestamps == "word":
        return JSONResponse(captioned(result, data, req.response_format), headers=headers)
    return Response(data, media_type=FORMATS[req.response_format].media_type, headers=headers)


async def _json_body(request: Request, max_bytes: int, timeout_s: float) -> dict[str, Any]:
    """The body as a JSON object, read within bounds (``BodyRefused`` otherwise)."""
    raw = await read_body(request, max_bytes=max_bytes, timeout_s=timeout_s)
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BodyRefused(400, "bad_json", f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BodyRefused(400, "bad_json", "the body must be a JSON object")
    return body


def _check_spoken_length(spoken: str, written: int, limit: int) -> None:
    """The input limit applies to the text as it will be spoken: "1234" is four characters
    written and 40 spoken ("one thousand two hundred and thirty-four")."""
    if len(spoken) > limit:
        raise TextTooLongError(
            f"input is {len(spoken)} characters once spoken (numbers, symbols and "
            f"abbreviations written out; {written} as written); the limit is {limit}"
        )


def _client_gone() -> Response:
    """The answer to a request whose client has left: nobody reads it."""
    return error_response(499, "client_closed_request", "the client closed the connection")


def captioned(result: SpeechResult, data: bytes, response_format: str) -> dict[str, Any]:
    """The JSON answer of a request with word timestamps (seconds on the returned audio)."""
    return {
        "audio": base64.b64encode(data).decode("ascii"),
        "format": response_format,
        "media_type": FORMATS[response_format].media_type,
        "sample_rate": SAMPLE_RATE,
        "audio_seconds": round(result.audio_seconds, 3),
        "words": [
            {
                "word": word.text,
                "start": round(word.start / SAMPLE_RATE, 3),
                "end": round(word.end / SAMPLE_RATE, 3),
                "char_start": word.char_start,
                "char_end": word.char_end,
            }
            for word in result.words
        ],
    }


async def voices(request: Request) -> Response:
    service = _service(request)
    try:
        bank = service.synthesizer.voices
    except TTSError as error:
        return tts_error_response(error)
    return JSONResponse(
        {
            "default": service.settings.default_voice,
            "voices": [
                {"name": info.name, "language": info.language, "gender": info.gender}
                for info in bank.infos()
            ],
        }
    )


async def models(request: Request) -> Response:
    return JSONResponse(
        {"object": "list", "data": [{"id": name, "object": "model"} for name in MODEL_NAMES]}
    )


async def stats(request: Request) -> Response:
    """Recent streaming aggregates (time to first audio, RTF, queue depths)."""
    service = _service(request)
    try:
        pipeline = service.pipeline
    except TTSError as error:
        return tts_error_response(error)
    body = pipeline.stats()
    body["memory"] = service.memory.stats()
    body["event_loop"] = service.loop_monitor.stats()
    body["models"] = _served_models(service.settings.model_path, service.settings.variant, pipeline)
    if service.plan_choice is not None:
        body["plan"] = _plan_report(service.plan_choice)
    return JSONResponse(body)


def _served_models(
    user_model: Path | None, variant: str, pipeline: Pipeline
) -> list[dict[str, str | None]]:
    """Which graph each provider's sessions run (after a swap, the new ones)."""
    served = {
        (worker.engine.config.providers[0], worker.engine.config.model_path.name)
        for worker in pipeline.workers
    }
    return [
        {"provider": provider, "variant": variant_of(user_model, variant, provider), "file": name}
        for provider, name in sorted(served)
    ]


def _plan_report(choice: PlanChoice) -> dict[str, Any]:
    return {
        "plan": choice.plan,
        "source": choice.source,
        "seconds": round(choice.seconds, 3),
        "rule": choice.rule,
        "scores": [dataclasses.asdict(score) for score in choice.scores],
    }


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    service = _service(request)
    if service.drain.started:  # load balancers: send new clients elsewhere
        return JSONResponse({"status": "draining"}, 503, headers={"Retry-After": "1"})
    body: dict[str, Any] = {"status": service.phase.value}
    if service.error:
        body["error"] = service.error
    if service.phase is Phase.READY:
        body["startup_seconds"] = {k: round(v, 3) for k, v in service.startup_seconds.items()}
        if service.plan_choice is not None:
            body["plan"] = service.plan_choice.plan
            body["plan_source"] = service.plan_choice.source
        try:
            admission = service.pipeline.admission
        except TTSError:  # shutting down
            return JSONResponse({"status": "stopping"}, 503)
        body["capacity"] = {
            "max_active_streams": admission.capacity(),
            "generating_streams": admission.generating,
        }
        return JSONResponse(body)
    return JSONResponse(body, 503, headers={"Retry-After": "1"})


async def status(request: Request) -> Response:
    """``GET /v1/status``: phase, startup profile and plan, whether ready or not (always 200)."""
    service = _service(request)
    body: dict[str, Any] = {
        "status": service.phase.value,
        "startup_seconds": {k: round(v, 3) for k, v in service.startup_seconds.items()},
        "plan": service.plan_name,
        "plan_source": service.plan_choice.source if service.plan_choice else "configured",
        "onnxruntime": ort.__version__,
    }
    if service.error:
        body["error"] = service.error
    return JSONResponse(body)


async def benchmarks(request: Request) -> Response:
    """``GET /v1/benchmarks``: recent benchmark runs and regressions (see app.regression)."""
    history = BenchHistory(_service(request).settings.cache_dir / HISTORY_FILE)
    runs, regressions = await asyncio.gather(
        asyncio.to_thread(history.recent, 50),
        asyncio.to_thread(history.recent, 20, regressions_only=True),
    )
    service = _service(request)
    scheduled = service.benchmark
    return JSONResponse(
        {
            "rule": regression.__doc__,
            "runs": [run.to_json() for run in runs],
            "regressions": [run.to_json() for run in regressions],
            "scheduled": None if scheduled is None else scheduled.status(),
            "live": {"rule": degradation.__doc__, **_live_json(service)},
        }
    )


def _live_json(service: Service) -> dict[str, Any]:
    """The live degradation baseline (cost model) and signals; empty until ready."""
    try:
        live = service.pipeline.metrics.live
    except TTSError:
        return {"baseline": None, "signals": []}
    model = live.baseline
    return {
        "baseline": None if model is None else dataclasses.asdict(model),
        "signals": [verdict.to_json() for verdict in live.verdicts()],
    }


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (see ``app.prometheus_metrics``)."""
    body = _service(request).prometheus.exposition()
    return Response(body, media_type=CONTENT_TYPE)


def _admin_refusal(request: Request) -> Response | None:
    """None if the request carries the admin token; else the error response to send."""
    token = _service(request).settings.admin_token
    if not token:
        return error_response(
            403, "admin_disabled", "the admin API is off: start the server with KOKORO_ADMIN_TOKEN"
        )
    if not AccessPolicy(api_key=token).key_accepted(request.headers):
        return error_response(
            401,
            "unauthorized",
            "send the admin token as 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    return None


async def admin_plan(request: Request) -> Response:
    """``POST /v1/admin/plan {"plan": "cpu:2x1"}``: switch the provider plan (see plan_swap)."""
    refusal = _admin_refusal(request)
    if refusal is not None:
        return refusal
    settings = _service(request).settings
    try:
        raw = await read_body(
            request, max_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s
        )
    except BodyRefused as refused:
        return error_response(refused.status, refused.code, refused.message)
    except ClientDisconnect:
        return _client_gone()
    try:
        plan = json.loads(raw)["plan"]
        if not isinstance(plan, str):
            raise TypeError("plan must be a string")
    except (ValueError, KeyError, TypeError) as error:
        message = f'expected a JSON body like {{"plan": "cpu:2x1"}} ({error})'
        return error_response(400, "bad_request", message)
    try:
        report = await _service(request).swapper.swap(plan)
    except TTSError as error:
        return tts_error_response(error)
    return JSONResponse(report.to_json())


routes = [
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/voices", voices, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/stats", stats, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/v1/admin/plan", admin_plan, methods=["POST"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/benchmarks", benchmarks, methods=["GET"]),
]
