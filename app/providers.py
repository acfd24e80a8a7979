"""Provider plans: which execution provider runs inference, in how many sessions, with how many
threads each.

On a CPU the same cores can be spent as one session with all of them (the fastest single
request) or several sessions with fewer threads each (more requests at once, each slower, and
less time lost to synchronising threads). Accelerators (CUDA, ROCm, DirectML, CoreML) are
discovered from ``onnxruntime.get_available_providers()`` and get one session each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import excerpt

CPU = "CPUExecutionProvider"
ACCELERATORS = {
    "CUDAExecutionProvider": "cuda",
    "ROCMExecutionProvider": "rocm",
    "DmlExecutionProvider": "dml",
    "CoreMLExecutionProvider": "coreml",
}
"""Accelerator providers the server knows how to use, with their short names."""
SHORT_NAMES = {"cpu": CPU, **{short: name for name, short in ACCELERATORS.items()}}
_PLAN = re.compile(r"^(?P<provider>[a-z]+):(?P<sessions>\d+)x(?P<threads>\d+)$")


def short_name(provider: str) -> str:
    """``cpu``, ``cuda``...: the name plans and inference actors use."""
    return ACCELERATORS.get(provider, "cpu")


@dataclass(frozen=True, slots=True, order=True)
class ProviderPlan:
    """An execution provider, the number of sessions (one inference actor each) and the
    intra-op threads of each session."""

    provider: str = CPU
    sessions: int = 1
    threads: int = 2

    def __post_init__(self) -> None:
        if self.provider != CPU and self.provider not in ACCELERATORS:
            raise ValueError(f"unknown execution provider {self.provider!r}")
        if not 1 <= self.sessions <= 64 or not 1 <= self.threads <= 256:
            raise ValueError("need 1 <= sessions <= 64 and 1 <= threads <= 256")

    @property
    def short_provider(self) -> str:
        return short_name(self.provider)

    @property
    def name(self) -> str:
        """``cpu:1x2``: provider, sessions x threads per session."""
        return f"{self.short_provider}:{self.sessions}x{self.threads}"

    @classmethod
    def parse(cls, text: str) -> ProviderPlan:
        """The inverse of ``name``; raises ``ValueError`` with the accepted form."""
        match = _PLAN.match(text.strip().lower())
        if match is None or match["provider"] not in SHORT_NAMES:
            raise ValueError(
                f"bad provider plan {excerpt(text)}: expected PROVIDER:SESSIONSxTHREADS with "
                f"PROVIDER one of {sorted(SHORT_NAMES)}, e.g. cpu:1x2"
            )
        return cls(SHORT_NAMES[match["provider"]], int(match["sessions"]), int(match["threads"]))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def candidate_plans(available: Sequence[str], cores: int) -> list[ProviderPlan]:
    """The plans worth benchmarking on this machine.

    CPU: every split of the cores into equal sessions (1 x cores, ..., cores x 1), capped at 8
    sessions. Each available accelerator: one session (its threads only feed it).
    """
    plans = [
        ProviderPlan(CPU, sessions, cores // sessions)
        for sessions in range(1, min(cores, 8) + 1)
        if cores % sessions == 0
    ]
    plans += [ProviderPlan(name, 1, 1) for name in ACCELERATORS if name in available]
    return plans
