"""Facts about the load generator's machine, recorded so that reports can be compared."""

from __future__ import annotations

import os
import platform
from typing import Any

import onnxruntime as ort

from app.bench import cpu_model
from app.providers import usable_cores


def machine_facts() -> dict[str, Any]:
    """Blocking (reads ``/proc/cpuinfo``). The raw loop adds the facts of its sessions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
    }
