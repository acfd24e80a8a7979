"""Open streams per client address, over all of that address's connections.

The per-connection limit alone lets one client take every synthesis slot by opening more
connections. Behind a reverse proxy every client has the proxy's address: run uvicorn with
``--proxy-headers`` and ``--forwarded-allow-ips`` so the address is the client's, or raise the
limit.
"""

from __future__ import annotations

from collections import Counter

from app import wire


class ClientStreams:
    """Counts streams by address; ``open`` refuses one over ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_streams_per_client must be >= 1, got {limit}")
        self.limit = limit
        self._open: Counter[str] = Counter()

    def open(self, address: str, stream: str) -> None:
        """Count one more stream for ``address``, or raise ``too_many_streams``."""
        if self._open[address] >= self.limit:
            raise wire.ProtocolError(
                "too_many_streams",
                f"at most {self.limit} streams per client address, over all its connections",
                stream=stream,
            )
        self._open[address] += 1

    def close(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open[address]
