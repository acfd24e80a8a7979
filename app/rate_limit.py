"""How many messages a connection may send, on average and in a burst: a token bucket, and the
gate a WebSocket's frames pass through on their way to being decoded."""

from __future__ import annotations

import time
from collections.abc import Callable, Container

from app import wire


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; each message takes one."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def take(self) -> bool:
        """Spend a token if one is there; False means over the limit."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class MessageGate:
    """Decodes a connection's frames, ``rate`` a second in bursts of as many.

    Every frame, valid or not, counts against the rate, and one over it is refused as
    ``rate_limited`` (naming its stream when it has one), except an ``end`` or ``cancel`` of an
    open stream: dropping it would leave the stream open, holding its synthesis slot."""

    def __init__(
        self, rate: float, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.max_bytes = max_bytes
        self._bucket = TokenBucket(rate, max(1.0, rate), clock)

    def decode(self, data: bytes | str, open_streams: Container[str]) -> wire.ClientMessage:
        """The message, or ``wire.ProtocolError`` (bad, too big, or over the rate)."""
        within_rate = self._bucket.take()
        try:
            decoded = wire.decode_client(data, max_bytes=self.max_bytes)
        except wire.ProtocolError:
            if within_rate:
                raise
            decoded = None
        if isinstance(decoded, wire.End | wire.Cancel) and decoded.stream in open_streams:
            return decoded
        if not within_rate:
            raise wire.ProtocolError(
                "rate_limited",
                f"more than {self.rate:g} messages per second; this one was dropped",
                stream=getattr(decoded, "stream", None),
            )
        assert decoded is not None
        return decoded
