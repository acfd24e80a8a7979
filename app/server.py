"""The Starlette application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette

from app.http_api import routes
from app.service import Service
from app.settings import Settings
from app.tts.synthesizer import Synthesizer


def create_app(
    settings: Settings,
    synthesizer: Synthesizer | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Starlette:
    """Build the app; the model loads (unless ``synthesizer`` is given) and warms after startup."""
    service = Service(settings, synthesizer, on_fatal)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        starting = asyncio.create_task(service.start(), name="service-start")
        try:
            yield
        finally:
            starting.cancel()
            await asyncio.wait([starting])
            await asyncio.to_thread(service.close)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app
