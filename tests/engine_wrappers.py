"""Provider wrappers for fault injection: a real engine whose calls a test can make fail, hang or
slow down. Subclasses override ``synthesize``; everything else goes to the wrapped engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.tts.engine import Engine, Synthesis

T = TypeVar("T")


class EngineWrapper:
    """Passes every call through to ``inner``; pass it where an ``Engine`` is expected (cast)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def providers(self) -> list[str]:
        return self.inner.providers

    @property
    def config(self) -> Any:
        return self.inner.config

    def synthesize(
        self,
        tokens: Sequence[int],
        style: npt.NDArray[np.float32],
        speed: float,
        run_options: ort.RunOptions | None = None,
    ) -> Synthesis:
        return self.inner.synthesize(tokens, style, speed, run_options)

    async def call(self, function: Callable[[], T]) -> T:
        return await self.inner.call(function)
