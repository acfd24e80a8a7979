"""Memory pressure: how close the server is to its memory limit, and what it gives up to stay
under it.

A model call's activations grow with its length (about 0.3 GB at 14 tokens, 0.9 GB at 300 on
the shipped graph), and ONNX Runtime's CPU arena keeps its peak after the call. A server that
admits streams without looking at memory is killed by the kernel when its container limit is
reached, and every stream it holds dies with it. So the monitor reads the tightest of three
limits: ``KOKORO_MEMORY_LIMIT_MB`` against the process's resident memory, the cgroup's limit
against its working set (usage less inactive file cache, what the kernel cannot simply drop),
and the machine's memory against what is not available. Its actions, in order of pressure:

- ``shrink`` (70% of the limit): every model call gives its arena's memory back when it ends,
  and idle sessions give theirs back at once with a one-token call (0.15 s). Synthesis is up to
  11% slower while this lasts.
- ``throttle`` (80%): admission capacity is halved, so fewer long segments run at once.
- ``refuse`` (90%): new streams and HTTP requests are answered ``busy``; streams already
  admitted go on, because memory they need is already counted.

A level drops only after usage stayed 5 points of the limit below its threshold for
``RECOVERY_HOLD_S``: the arena regrows within each call and shrinks between calls, and a gap of a
few milliseconds between a stream's calls must not let a burst of new streams in.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.process import rss_bytes

logger = logging.getLogger(__name__)

THRESHOLDS = {"shrink": 0.70, "throttle": 0.80, "refuse": 0.90}
RECOVERY_MARGIN = 0.05
RECOVERY_HOLD_S = 2.0
POLL_S = 0.25
FRESH_S = 0.05
"""A reading younger than this is reused by ``refusal`` (admission of a burst of streams)."""

_PROC_CGROUP = Path("/proc/self/cgroup")
_MOUNTINFO = Path("/proc/self/mountinfo")
_MEMINFO = Path("/proc/meminfo")
_UNLIMITED = 1 << 60
"""cgroup v1 writes 'no limit' as a huge number (9223372036854771712, page-aligned)."""


class PressureLevel(enum.IntEnum):
    NORMAL = 0
    SHRINK = 1
    THROTTLE = 2
    REFUSE = 3

    @property
    def threshold(self) -> float:
        return THRESHOLDS.get(self.name.lower(), 0.0)


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Memory in use against the limit that binds (``source`` says which)."""

    used_bytes: int
    limit_bytes: int
    source: str

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.limit_bytes if self.limit_bytes > 0 else 0.0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, field: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == field and fields[1].isdigit():
            return int(fields[1])
    return 0


def _mount_points() -> list[tuple[str, str, str, str]]:
    """(root, mount point, filesystem type, super options) of every mount."""
    mounts = []
    try:
        lines = _MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split()
        if len(tail) >= 3:
            mounts.append((fields[3], fields[4], tail[0], tail[2]))
    return mounts


@functools.cache
def cgroup_memory_dir() -> tuple[Path, int] | None:
    """This process's memory cgroup directory and its version (1 or 2), if mounted (read once:
    the monitor reads memory every 0.25 s and before admissions)."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif hierarchy == "0" and controllers == "":
            v2 = path
    for root, mount, fstype, options in _mount_points():
        version = 1 if fstype == "cgroup" and "memory" in options.split(",") else 0
        version = 2 if fstype == "cgroup2" and v1 is None else version
        own = v1 if version == 1 else v2 if version == 2 else None
        if own is None:
            continue
        relative = Path(own).relative_to(root) if own.startswith(root) else Path(own.lstrip("/"))
        directory = Path(mount) / relative
        if directory.is_dir():
            return directory, version
    return None


def cgroup_working_set(directory: Path, version: int) -> int | None:
    """A cgroup's usage less its inactive file cache (what reclaim cannot simply drop)."""
    if version == 2:
        usage = _read_int(directory / "memory.current")
        inactive = _stat_value(directory / "memory.stat", "inactive_file")
    else:
        usage = _read_int(directory / "memory.usage_in_bytes")
        inactive = _stat_value(directory / "memory.stat", "total_inactive_file")
    return None if usage is None else max(0, usage - inactive)


def cgroup_limit(directory: Path, version: int) -> int | None:
    """A cgroup's memory limit, its ancestors' included; None when none of them has one."""
    if version == 1:
        own = _read_int(directory / "memory.limit_in_bytes")
        inherited = _stat_value(directory / "memory.stat", "hierarchical_memory_limit")
        limits = [value for value in (own, inherited) if value and value < _UNLIMITED]
    else:
        limits = []
        for level in (directory, *directory.parents):
            value = _read_int(level / "memory.max")  # "max" reads as None
            if value is not None:
                limits.append(value)
            if not (level.parent / "cgroup.controllers").is_file():
                break  # the top of the mounted hierarchy
    return min(limits, default=None)


def cgroup_reading() -> MemoryReading | None:
    """This process's cgroup working set against its limit; None without a cgroup limit."""
    found = cgroup_memory_dir()
    if found is None:
        return None
    limit = cgroup_limit(*found)
    used = cgroup_working_set(*found)
    if limit is None or used is None:
        return None
    return MemoryReading(used, limit, "cgroup")


def system_reading() -> MemoryReading | None:
    """The machine's memory not available for new allocations, against its total."""
    total = _stat_value(_MEMINFO, "MemTotal:")
    available = _stat_value(_MEMINFO, "MemAvailable:")
    if not total:
        return None
    return MemoryReading((total - available) * 1024, total * 1024, "system")


def read_memory(configured_limit_bytes: int = 0) -> MemoryReading | None:
    """The tightest of the configured, cgroup and system limits (highest ratio)."""
    readings = [cgroup_reading(), system_reading()]
    if configured_limit_bytes > 0:
        readings.append(MemoryReading(rss_bytes(), configured_limit_bytes, "configured"))
    present = [reading for reading in readings if reading is not None]
    return max(present, key=lambda reading: reading.ratio, default=None)


async def _release_nothing() -> None:
    """The default idle release: no sessions to release."""


@dataclass(slots=True)
class PressureActions:
    """What the monitor changes; set by the service to reach the running pipeline."""

    shrink: Callable[[bool], None] = lambda on: None
    """Turn arena shrinkage after every call on or off."""
    release_idle: Callable[[], Awaitable[None]] = _release_nothing
    """Give idle sessions' arena memory back now (the default does nothing)."""


class MemoryMonitor:
    """Follows memory usage and holds the pressure level the rest of the server obeys."""

    def __init__(
        self,
        configured_limit_bytes: int = 0,
        *,
        read: Callable[[], MemoryReading | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        hold_s: float = RECOVERY_HOLD_S,
    ) -> None:
        """``read`` replaces the real readings (fault injection in tests)."""
        self.configured_limit_bytes = configured_limit_bytes
        self._read = read or (lambda: read_memory(configured_limit_bytes))
        self._clock = clock
        self._hold_s = hold_s
        self.level = PressureLevel.NORMAL
        self.reading: MemoryReading | None = None
        self.peak_ratio = 0.0
        self._read_at = float("-inf")
        self._below_since: float | None = None
        self.entered: dict[str, int] = {level.name.lower(): 0 for level in PressureLevel}
        self.refused = 0
        self.actions = PressureActions()

    def update(self) -> PressureLevel:
        """Read memory now and move the level: up at once, down after the hold."""
        reading = self._read()
        now = self._clock()
        self._read_at = now
        self.reading = reading
        if reading is None:
            return self.level
        ratio = reading.ratio
        self.peak_ratio = max(self.peak_ratio, ratio)
        target = PressureLevel.NORMAL
        for level in reversed(PressureLevel):
            if level is not PressureLevel.NORMAL and ratio >= level.threshold:
                target = level
                break
        if target > self.level:
            self._set(target, reading)
            self._below_since = None
        elif target < self.level:
            if ratio >= self.level.threshold - RECOVERY_MARGIN:
                self._below_since = None
            elif self._below_since is None:
                self._below_since = now
            elif now - self._below_since >= self._hold_s:
                self._set(target, reading)
                self._below_since = None
        else:
            self._below_since = None
        return self.level

    def _set(self, level: PressureLevel, reading: MemoryReading) -> None:
        previous, self.level = self.level, level
        if level > previous:
            self.entered[level.name.lower()] += 1
        logger.log(
            logging.WARNING if level > previous else logging.INFO,
            "memory pressure %s -> %s: %d of %d MB (%s limit)",
            previous.name.lower(),
            level.name.lower(),
            reading.used_bytes >> 20,
            reading.limit_bytes >> 20,
            reading.source,
        )
        self.actions.shrink(level >= PressureLevel.SHRINK)

    def refusal(self) -> str | None:
        """Why a new stream or request must be refused now, or None (reads memory if stale)."""
        if self._clock() - self._read_at > FRESH_S:
            self.update()
        if self.level < PressureLevel.REFUSE:
            return None
        self.refused += 1
        reading = self.reading
        detail = (
            f" ({reading.used_bytes >> 20} of {reading.limit_bytes >> 20} MB, {reading.source})"
            if reading is not None
            else ""
        )
        return f"memory is low{detail}"

    def capacity(self, capacity: int) -> int:
        """Admission capacity under the current level: halved from ``throttle`` on."""
        if self.level >= PressureLevel.THROTTLE:
            return max(1, capacity // 2)
        return capacity

    async def run(self, poll_s: float = POLL_S) -> None:
        """Poll until cancelled; while shrinking, release idle sessions' arenas."""
        while True:
            level = self.update()
            if level >= PressureLevel.SHRINK:
                await self.actions.release_idle()
            await asyncio.sleep(poll_s)

    def stats(self) -> dict[str, Any]:
        reading = self.reading
        return {
            "level": self.level.name.lower(),
            "used_bytes": reading.used_bytes if reading else None,
            "limit_bytes": reading.limit_bytes if reading else None,
            "source": reading.source if reading else None,
            "ratio": round(reading.ratio, 4) if reading else None,
            "peak_ratio": round(self.peak_ratio, 4),
            "configured_limit_bytes": self.configured_limit_bytes or None,
            "thresholds": THRESHOLDS,
            "entered_total": dict(self.entered),
            "refused_total": self.refused,
        }
