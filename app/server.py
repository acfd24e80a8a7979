"""The Starlette application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from app.access import ANY, AccessMiddleware, AccessPolicy, listening_name
from app.bench import EngineBenchmark
from app.capacity_agent import capacity_agent
from app.gateway import stream_endpoint
from app.http_api import routes
from app.plan_loader import PlanChoice
from app.service import Service
from app.settings import Settings
from app.tracing import Tracing
from app.tts.synthesizer import Synthesizer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
"""The browser player (``make serve`` adds the msgpack decoder under ``vendor/``)."""

SHUTDOWN_SECONDS = 10.0
"""How long the pipeline may take to drain at shutdown before it is cancelled."""


async def player_page(request: Request) -> Response:
    """The browser player: speak as you type, with live buffer and latency figures."""
    return FileResponse(STATIC_DIR / "index.html")


def create_app(
    settings: Settings,
    synthesizer: Synthesizer | None = None,
    on_fatal: Callable[[str], None] | None = None,
    plan_choice: PlanChoice | None = None,
    *,
    startup_seconds: Mapping[str, float] | None = None,
    tracing: Tracing | None = None,
    benchmark: EngineBenchmark | None = None,
) -> Starlette:
    """Build the app; the model loads (unless ``synthesizer`` is given) and warms after startup.

    ``plan_choice`` says how a given synthesizer's provider plan was chosen, ``startup_seconds``
    how long the phases before the app took (both for reports); ``tracing`` defaults to what the
    ``OTEL_*`` variables configure; ``benchmark`` what the scheduled benchmark runs."""
    service = Service(
        settings,
        synthesizer,
        on_fatal,
        plan_choice,
        startup_seconds=startup_seconds,
        tracing=tracing,
        benchmark=benchmark,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        monitor = asyncio.create_task(service.loop_monitor.run(), name="loop-monitor")
        running = asyncio.create_task(service.run(), name="service")
        try:
            async with capacity_agent(service, settings.host, settings.agent_port):
                yield
        finally:
            service.shutdown()
            done, _ = await asyncio.wait([running], timeout=SHUTDOWN_SECONDS)
            if not done:
                running.cancel()
                await asyncio.wait([running])
            monitor.cancel()
            await asyncio.wait([monitor])
            await asyncio.to_thread(service.close)

    hosts = settings.allowed_hosts | listening_name(settings.host)
    if ANY in hosts:
        logger.warning(
            "KOKORO_ALLOWED_HOSTS=*: any Host is answered, so a page on another site can reach "
            "this server through DNS rebinding"
        )
    policy = AccessPolicy(settings.api_key, settings.allowed_origins, hosts)
    app = Starlette(
        middleware=[Middleware(AccessMiddleware, policy=policy)],
        routes=[
            *routes,
            WebSocketRoute("/v1/stream", stream_endpoint),
            Route("/", player_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    return app
