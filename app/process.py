"""Facts about the server process itself (for ``/v1/stats`` and load-test reports), and handing
its free heap back to the system."""

from __future__ import annotations

import ctypes
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def rss_bytes() -> int:
    """Resident set size now (Linux), else the peak the kernel reports."""
    now = _status_bytes("VmRSS")
    if now is not None:
        return now
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Start a new peak (``VmHWM``) from the current resident size; False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """The resident peak since the process started or ``reset_peak_rss`` (Linux)."""
    return _status_bytes("VmHWM")


def trim_heap() -> bool:
    """Hand the C heap's free memory back to the system (glibc's ``malloc_trim``).

    Memory freed inside the heap stays resident until the heap's top is free as well: loading
    the model (its graph parsed, edited and serialised) and a long call's arena, once released,
    leave hundreds of megabytes of it. The server trims after warming up and after a memory
    pressure release. Returns False where the C library has no such call (musl, macOS)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
