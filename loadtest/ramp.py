"""The ramp: steps of concurrent users, each lasting an equal share of the duration.

User ``k`` (from 0) is active during the steps with more than ``k`` users, so a rising ramp adds
users and keeps the earlier ones running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.records import StepWindow

FALLBACK_STEPS = (1, 2, 3, 4)
"""Steps when the server advertises no capacity."""
BEYOND_CAPACITY = 2
"""By default the ramp goes this many users past the advertised capacity, to see refusals."""


def default_steps(capacity: int | None) -> tuple[int, ...]:
    """``1..capacity+2``, or ``FALLBACK_STEPS`` without an advertised capacity."""
    if capacity is None or capacity < 1:
        return FALLBACK_STEPS
    return tuple(range(1, capacity + BEYOND_CAPACITY + 1))


def parse_steps(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``; every step needs at least one user."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"steps must be comma-separated integers, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"steps need at least one step and one user per step, got {text!r}")
    return steps


@dataclass(frozen=True, slots=True)
class Ramp:
    windows: tuple[StepWindow, ...]

    @classmethod
    def even(cls, steps: Sequence[int], duration_s: float) -> Ramp:
        """``steps`` over ``duration_s`` seconds, split evenly, starting at 0."""
        if not steps or duration_s <= 0:
            raise ValueError("a ramp needs steps and a positive duration")
        each = duration_s / len(steps)
        return cls(
            tuple(
                StepWindow(index, users, index * each, (index + 1) * each)
                for index, users in enumerate(steps)
            )
        )

    @property
    def end(self) -> float:
        return self.windows[-1].end

    @property
    def users(self) -> int:
        """Users ever active at once: one task each."""
        return max(window.users for window in self.windows)

    def step_at(self, t: float) -> StepWindow | None:
        """The step running at ``t``; ``None`` before the start and from the end on."""
        for window in self.windows:
            if window.contains(t):
                return window
        return None

    def next_active(self, user: int, t: float) -> StepWindow | None:
        """The step running at ``t`` or the first after it in which ``user`` is active."""
        for window in self.windows:
            if window.end > t and window.users > user:
                return window
        return None
