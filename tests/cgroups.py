"""A child memory cgroup for one test, with a limit the test sets (root and cgroups needed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from app.memory_pressure import cgroup_memory_dir, cgroup_working_set


class MemoryCgroup:
    """A memory cgroup below this process's own; ``remove`` after its processes have exited."""

    def __init__(self) -> None:
        found = cgroup_memory_dir()
        if found is None:
            pytest.skip("no memory cgroup is mounted")
        parent, self.version = found
        self.path = parent / f"kokoro-test-{uuid.uuid4().hex[:8]}"
        try:
            self.path.mkdir()
        except OSError as error:
            pytest.skip(f"cannot create a memory cgroup: {error}")
        if self.version == 2 and not (self.path / "memory.max").is_file():
            self.path.rmdir()
            pytest.skip("the memory controller is not enabled for child cgroups")

    @property
    def procs(self) -> Path:
        """Write a pid here to move that process in (``echo $$ > procs`` in a shell)."""
        return self.path / "cgroup.procs"

    def set_limit(self, limit_bytes: int) -> None:
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        (self.path / name).write_text(str(limit_bytes))

    def working_set(self) -> int:
        used = cgroup_working_set(self.path, self.version)
        assert used is not None
        return used

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        if self.path.is_dir() and not self.procs.read_text().split():
            self.path.rmdir()
