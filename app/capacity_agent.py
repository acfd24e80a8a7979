"""A load balancer's view of this server's free capacity: HAProxy's agent-check protocol.

HAProxy (``agent-check agent-port N``) connects to this port every ``agent-inter`` and reads one
line. It scales the server's configured weight by the percentage and takes the server out of
rotation on ``down`` (here: still loading) or stops sending it new connections on ``drain``
(here: shutting down). With ``balance leastconn`` new streams then go to the replicas with the
most free streaming capacity (``app.admission``) rather than the fewest sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from app.errors import TTSError
from app.service import Phase, Service

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 2.0


def agent_reply(service: Service) -> str:
    """One line: ``down``, ``drain``, or ``up ready N%`` with N the free share of capacity."""
    if service.drain.started:
        return "drain\n"
    if service.phase is not Phase.READY:
        return "down\n"
    try:
        admission = service.pipeline.admission
    except TTSError:  # stopping
        return "drain\n"
    capacity = admission.capacity()
    free = max(0, capacity - admission.generating)
    percent = max(1, round(100 * free / capacity)) if capacity > 0 else 1
    return f"up ready {percent}%\n"


@contextlib.asynccontextmanager
async def capacity_agent(service: Service, host: str, port: int) -> AsyncIterator[int | None]:
    """Serve the agent on ``host:port`` (0: off) while the context lasts; yields the port."""
    if not port:
        yield None
        return

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(agent_reply(service).encode("ascii"))
            await asyncio.wait_for(writer.drain(), ANSWER_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    bound: int = server.sockets[0].getsockname()[1]
    logger.info("capacity agent on %s:%d", host, bound)
    async with server:
        yield bound
